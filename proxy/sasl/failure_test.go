package sasl

import (
	"errors"
	"testing"
)

func TestFailure(t *testing.T) {
	cause := errors.New("token expired")
	f := &Failure{Status: StatusInvalidToken, Err: cause}
	if got, want := f.Error(), "sasl: authentication failed (invalid_token): token expired"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(f, cause) {
		t.Error("errors.Is(f, cause) = false")
	}
	if got, want := (&Failure{}).Error(), "sasl: authentication failed (invalid_token)"; got != want {
		t.Errorf("zero Failure: Error() = %q, want %q", got, want)
	}
	var nilf *Failure
	if nilf.Error() == "" || nilf.Unwrap() != nil {
		t.Error("nil *Failure must not panic")
	}
}

func TestFailureJSON(t *testing.T) {
	tests := []struct {
		f                   Failure
		oauthBearer, xoauth string
	}{
		{Failure{},
			`{"status":"invalid_token"}`,
			`{"status":"401","schemes":"bearer"}`},
		{Failure{Status: StatusInvalidToken, Scope: "openid email", OpenIDConfiguration: "https://idp.example/.well-known/openid-configuration"},
			`{"status":"invalid_token","scope":"openid email","openid-configuration":"https://idp.example/.well-known/openid-configuration"}`,
			`{"status":"401","schemes":"bearer","scope":"openid email"}`},
		{Failure{Status: StatusInsufficientScope, Scope: "imap"},
			`{"status":"insufficient_scope","scope":"imap"}`,
			`{"status":"403","schemes":"bearer","scope":"imap"}`},
		{Failure{Status: StatusInvalidRequest},
			`{"status":"invalid_request"}`,
			`{"status":"400","schemes":"bearer"}`},
		// Values are JSON-escaped, never spliced in.
		{Failure{Status: `x"y`, Scope: "a\\b"},
			`{"status":"x\"y","scope":"a\\b"}`,
			`{"status":"401","schemes":"bearer","scope":"a\\b"}`},
	}
	for _, tt := range tests {
		if got := string(tt.f.oauthBearerJSON()); got != tt.oauthBearer {
			t.Errorf("%+v: OAUTHBEARER challenge %s, want %s", tt.f, got, tt.oauthBearer)
		}
		if got := string(tt.f.xoauth2JSON()); got != tt.xoauth {
			t.Errorf("%+v: XOAUTH2 challenge %s, want %s", tt.f, got, tt.xoauth)
		}
	}
}
