package proxy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// validatorFunc is a test Validator.
type validatorFunc func(introspect.Request) (introspect.Identity, error)

func (f validatorFunc) Validate(_ context.Context, r introspect.Request) (introspect.Identity, error) {
	return f(r)
}

func TestAuthorize(t *testing.T) {
	alice := validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
		switch r.Token {
		case "good":
			return introspect.Identity{User: "alice@example.com"}, nil
		case "noscope":
			return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInsufficientScope, Scope: "email imap", Discovery: "https://idp/.well-known/openid-configuration"}
		case "down":
			return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrTemporary}
		case "cancelled":
			return introspect.Identity{}, context.Canceled
		}
		return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInvalidToken, Discovery: "https://idp/.well-known/openid-configuration"}
	})
	l := ListenerConfig{Name: "imaps", PublicHost: "mail.example.com", PublicPort: 993}
	cases := []struct {
		name   string
		creds  sasl.Credentials
		status string // RFC 7628 status, "" for success, "temporary" for a non-Failure error
	}{
		{"good token", sasl.Credentials{Token: "good", CBFlag: 'n'}, ""},
		{"host and port match, any case", sasl.Credentials{Token: "good", Host: "MAIL.example.com", Port: 993, CBFlag: 'y'}, ""},
		{"authzid is the user, any case", sasl.Credentials{Token: "good", AuthzID: "Alice@Example.com", CBFlag: 'n'}, ""},
		{"authzid is someone else", sasl.Credentials{Token: "good", AuthzID: "bob@example.com", CBFlag: 'n'}, "invalid_token"},
		{"wrong host", sasl.Credentials{Token: "good", Host: "evil.example.com", CBFlag: 'n'}, "invalid_request"},
		{"wrong port", sasl.Credentials{Token: "good", Port: 143, CBFlag: 'n'}, "invalid_request"},
		{"channel binding requested", sasl.Credentials{Token: "good", CBFlag: 'p', CBType: "tls-exporter"}, "invalid_request"},
		{"invalid token", sasl.Credentials{Token: "bad", CBFlag: 'n'}, "invalid_token"},
		{"missing scope", sasl.Credentials{Token: "noscope", CBFlag: 'n'}, "insufficient_scope"},
		{"IdP down", sasl.Credentials{Token: "down", CBFlag: 'n'}, "temporary"},
		{"not a verdict on the token", sasl.Credentials{Token: "cancelled", CBFlag: 'n'}, "temporary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := Authorize(context.Background(), alice, l, Conn{}, "imap", tc.creds)
			var f *sasl.Failure
			switch {
			case tc.status == "":
				if err != nil || id.User != "alice@example.com" {
					t.Fatalf("got %+v, %v; want alice", id, err)
				}
			case tc.status == "temporary":
				if err == nil || errors.As(err, &f) {
					t.Fatalf("got %v; want a temporary error, not a Failure", err)
				}
			default:
				if !errors.As(err, &f) || f.Status != tc.status {
					t.Fatalf("got %v; want Failure %s", err, tc.status)
				}
			}
		})
	}
	_, err := Authorize(context.Background(), alice, l, Conn{}, "imap", sasl.Credentials{Token: "noscope", CBFlag: 'n'})
	var f *sasl.Failure
	if errors.As(err, &f); f.Scope != "email imap" || f.OpenIDConfiguration != "https://idp/.well-known/openid-configuration" {
		t.Errorf("insufficient_scope failure carries scope %q and openid-configuration %q", f.Scope, f.OpenIDConfiguration)
	}
}

func TestListenerValidate(t *testing.T) {
	good := ListenerConfig{Name: "imaps", Protocol: "imap", Address: ":993", TLS: TLSImplicit}
	if err := good.Validate("listeners[0]"); err != nil {
		t.Errorf("valid listener: %v", err)
	}
	// No protocol: which names are served is the program's registry, and cmd/saslgate
	// checks a listener's against it (TestConfigProtocolNames).
	bad := ListenerConfig{Address: "993", TLS: "yes", PublicPort: 70000}
	err := bad.Validate("listeners[1]")
	for _, field := range []string{"listeners[1].name", "listeners[1].protocol", "listeners[1].address", "listeners[1].tls", "listeners[1].public_port"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
}

// TestAuthorizeAuthzIDNearMisses pins the authorization identity check: the a= / user= name
// must be the token's user (case-insensitively), never a name that merely starts, ends or
// folds alike. Wire forms go through the real OAUTHBEARER parser, so =2C / =3D escapes are
// compared decoded.
func TestAuthorizeAuthzIDNearMisses(t *testing.T) {
	users := map[string]string{"t-alice": "alice@example.com", "t-comma": "a,b=c@example.com", "t-kelly": "kelly@example.com"}
	v := validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
		return introspect.Identity{User: users[r.Token]}, nil
	})
	cases := []struct {
		token, gs2 string // gs2: the client's GS2 header as sent on the wire
		ok         bool
	}{
		{"t-alice", "n,a=alice@example.com,", true},
		{"t-alice", "n,a=ALICE@Example.COM,", true},
		{"t-alice", "n,,", true},                          // no authzid: the token's user
		{"t-alice", "n,a=alice@example.co,", false},       // prefix of the user
		{"t-alice", "n,a=alice@example.com.evil,", false}, // the user is its prefix
		{"t-alice", "n,a=alice,", false},                  // local part only
		{"t-alice", "n,a=malice@example.com,", false},     // the user is its suffix
		{"t-alice", "n,a=lice@example.com,", false},       // suffix of the user
		{"t-alice", "n,a=alice@example.com ,", false},     // trailing space
		{"t-alice", "n,a=al\u0131ce@example.com,", false}, // dotless ı does not fold to i
		{"t-alice", "n,a=al\u0130ce@example.com,", false}, // nor does dotted İ
		{"t-alice", "n,a=alice=2C@example.com,", false},   // decodes to "alice,@example.com"
		{"t-comma", "n,a=a=2Cb=3Dc@example.com,", true},   // decodes to the user
		{"t-comma", "n,a=A=2CB=3DC@EXAMPLE.COM,", true},
		{"t-comma", "n,a=a=2Cb@example.com,", false},
		{"t-comma", "n,a=a=2Cb=3D@example.com,", false},
		{"t-kelly", "n,a=\u212Aelly@example.com,", true}, // KELVIN SIGN folds to k, as the username normalisation lowercases it
		{"t-kelly", "n,a=kelly@example.com\u212A,", false},
	}
	for _, tc := range cases {
		msg := []byte(tc.gs2 + "\x01auth=Bearer " + tc.token + "\x01\x01")
		creds, err := sasl.ParseOAuthBearer(msg)
		if err != nil {
			t.Fatalf("%q: %v", msg, err)
		}
		id, err := Authorize(context.Background(), v, ListenerConfig{Name: "imaps"}, Conn{}, "imap", creds)
		var f *sasl.Failure
		switch {
		case tc.ok && (err != nil || id.User != users[tc.token]):
			t.Errorf("token user %q, %s: got %+v, %v; want success", users[tc.token], tc.gs2, id, err)
		case !tc.ok && (!errors.As(err, &f) || f.Status != "invalid_token"):
			t.Errorf("token user %q, %s: got %v; want invalid_token", users[tc.token], tc.gs2, err)
		}
	}
}
