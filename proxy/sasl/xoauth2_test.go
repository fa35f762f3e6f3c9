package sasl

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseXOAuth2(t *testing.T) {
	tests := []struct {
		in   string
		want Credentials
	}{
		{googleXOAuth2, Credentials{Token: googleToken, AuthzID: "someuser@example.com"}},
		{"auth=Bearer t^Auser=u@example.com^A^A", Credentials{Token: "t", AuthzID: "u@example.com"}},
		{"auth=bearer t^A^A", Credentials{Token: "t"}},
		{"user=^Aauth=BEARER  t==^A^A", Credentials{Token: "t=="}},
		{"user=jörg@exämple.org^Aauth=Bearer t^A^A", Credentials{Token: "t", AuthzID: "jörg@exämple.org"}},
		{"user=u^Ahost=imap.example.com^Aauth=Bearer t^Avendor=\xff^A^A", Credentials{Token: "t", AuthzID: "u"}},
	}
	for _, tt := range tests {
		got, err := ParseXOAuth2(kv(tt.in))
		tt.want.Mechanism, tt.want.CBFlag = XOAuth2, 'n'
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseXOAuth2(%q)\n = %+v, %v\nwant %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseXOAuth2Malformed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty"},
		{"^A", "auth kvpair is missing"},
		{"^A^A", "after the closing kvsep"},
		{"user=u^A^A", "auth kvpair is missing"},
		{"user=u^Aauth=Bearer t^A", "does not end with kvsep kvsep"},
		{"user=u^Aauth=Bearer t", "does not end with kvsep kvsep"},
		{"user=u^Aauth=Bearer t^A^A^A", "after the closing kvsep"},
		{"user=u^Auser=v^Aauth=Bearer t^A^A", "user appears twice"},
		{"user=u^Aauth=Bearer t^Aauth=Bearer t^A^A", "auth appears twice"},
		{"user=u\r\n^Aauth=Bearer t^A^A", "control characters"},
		{"user=\xc3^Aauth=Bearer t^A^A", "UTF-8"},
		{"user=u^Aauth=Basic dTpw^A^A", "not a Bearer credential"},
		{"user=u^Aauth=Bearer t t^A^A", "b64token"},
		{"n,,^Aauth=Bearer t^A^A", "ALPHA key"}, // OAUTHBEARER sent to XOAUTH2
		{"user u^Aauth=Bearer t^A^A", "ALPHA key"},
	}
	for _, tt := range tests {
		c, err := ParseXOAuth2(kv(tt.in))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseXOAuth2(%q) = %+v, %v; want error containing %q", tt.in, c, err, tt.want)
		}
	}
}

func TestEncodeXOAuth2(t *testing.T) {
	if got := string(EncodeXOAuth2("someuser@example.com", googleToken)); got != string(kv(googleXOAuth2)) {
		t.Errorf("EncodeXOAuth2 = %q, want Google's example %q", got, kv(googleXOAuth2))
	}
}

func TestXOAuth2Server(t *testing.T) {
	runTranscripts(t, NewXOAuth2, []transcript{
		{name: "Google example with initial response", lines: []string{
			"C: " + googleXOAuth2,
			"S: OK",
		}},
		{name: "no initial response (imaplib, msmtp)", lines: []string{
			"C: <nil>",
			"S: + ",
			"C: user=u@example.com^Aauth=Bearer good^A^A",
			"S: OK",
		}},
		{name: "invalid token, client sends an empty response", lines: []string{
			"C: user=u@example.com^Aauth=Bearer expired^A^A",
			"S: + " + `{"status":"401","schemes":"bearer","scope":"email"}`,
			"C: ",
			"S: NO invalid_token",
		}},
		{name: "insufficient scope is 403", lines: []string{
			"C: user=u@example.com^Aauth=Bearer narrow^A^A",
			"S: + " + `{"status":"403","schemes":"bearer","scope":"email imap"}`,
			"C: ^A",
			"S: NO insufficient_scope",
		}},
		{name: "invalid request is 400", lines: []string{
			"C: user=u@example.com^Aauth=Bearer wronghost^A^A",
			"S: + " + `{"status":"400","schemes":"bearer"}`,
			"C: <nil>",
			"S: NO invalid_request",
		}},
		{name: "whole message again is no new attempt", lines: []string{
			"C: user=u@example.com^Aauth=Bearer revoked^A^A",
			"S: + " + `{"status":"401","schemes":"bearer"}`,
			"C: user=u@example.com^Aauth=Bearer good^A^A",
			"S: NO invalid_token",
		}},
		{name: "bare kvsep is malformed, not the OAUTHBEARER dance", lines: []string{
			"C: ^A",
			"S: BAD auth kvpair is missing",
		}},
		{name: "temporary trouble aborts at once", lines: []string{
			"C: auth=Bearer idpdown^A^A",
			"S: ERR IdP unreachable",
		}},
		{name: "Next after success", lines: []string{
			"C: auth=Bearer good^A^A",
			"S: OK",
			"C: auth=Bearer good^A^A",
			"S: ERR exchange already finished",
		}},
	})
}
