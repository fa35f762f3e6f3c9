package sasl

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	gosasl "github.com/emersion/go-sasl"
)

// A transcript alternates client messages and the server's answers, as in the
// RFC 7628 §4 examples (before base64), with ^A for kvsep:
//
//	C: <message>       Next(message); "C: <nil>" is Next(nil), "C: " is Next([]byte{})
//	S: + <challenge>   a challenge, exchange continues
//	S: OK              done, authenticated
//	S: NO <status>     done, a *Failure with that Status
//	S: BAD <text>      done, an ErrMalformed error whose text contains <text>
//	S: ERR <text>      done, another error whose text contains <text>
type transcript struct {
	name  string
	auth  Authenticator // testAuth when nil
	lines []string
}

func runTranscripts(t *testing.T, newServer func(Authenticator) gosasl.Server, tests []transcript) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := tt.auth
			if auth == nil {
				auth = testAuth
			}
			srv := newServer(auth)
			if len(tt.lines)%2 != 0 {
				t.Fatal("transcript must alternate C: and S: lines")
			}
			for i := 0; i < len(tt.lines); i += 2 {
				c, ok := strings.CutPrefix(tt.lines[i], "C: ")
				want, ok2 := strings.CutPrefix(tt.lines[i+1], "S: ")
				if !ok || !ok2 {
					t.Fatalf("line %d: want a C: line then an S: line", i+1)
				}
				var msg []byte
				if c != "<nil>" {
					msg = []byte(strings.ReplaceAll(c, "^A", "\x01"))
				}
				got := answer(srv.Next(msg))
				if !matches(got, want) {
					t.Fatalf("after C: %s\n got S: %s\nwant S: %s", c, got, want)
				}
			}
		})
	}
}

// answer renders the result of Next as a transcript S: line.
func answer(chal []byte, done bool, err error) string {
	var f *Failure
	switch {
	case !done && err == nil && chal != nil:
		return "+ " + string(chal)
	case !done:
		return fmt.Sprintf("INVALID: done=false, challenge=%q, err=%v", chal, err)
	case chal != nil:
		return fmt.Sprintf("INVALID: done with challenge %q", chal)
	case err == nil:
		return "OK"
	case errors.As(err, &f):
		return "NO " + f.Status
	case errors.Is(err, ErrMalformed):
		return "BAD " + err.Error()
	default:
		return "ERR " + err.Error()
	}
}

func matches(got, want string) bool {
	for _, p := range []string{"BAD ", "ERR "} {
		if w, ok := strings.CutPrefix(want, p); ok {
			return strings.HasPrefix(got, p) && strings.Contains(got, w)
		}
	}
	return got == want
}

var errIdPDown = errors.New("test: IdP unreachable")

// testAuth stands in for the token validator: the token says what happens.
func testAuth(c Credentials) error {
	switch c.Token {
	case "good", rfcToken, googleToken:
		return nil
	case "expired":
		return &Failure{Status: StatusInvalidToken, Scope: "email",
			OpenIDConfiguration: "https://idp.example/.well-known/openid-configuration",
			Err:                 errors.New("token expired")}
	case "narrow":
		return fmt.Errorf("proxy: %w", &Failure{Status: StatusInsufficientScope, Scope: "email imap"})
	case "wronghost":
		return &Failure{Status: StatusInvalidRequest}
	case "idpdown":
		return errIdPDown
	}
	return &Failure{Status: StatusInvalidToken}
}

// The RFC 7628 §4 and Google XOAUTH2 examples, decoded.
const (
	rfcToken       = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
	rfcIMAP        = "n,a=user@example.com,^Ahost=server.example.com^Aport=143^Aauth=Bearer " + rfcToken + "^A^A"
	rfcSMTP        = "n,a=user@example.com,^Ahost=server.example.com^Aport=587^Aauth=Bearer " + rfcToken + "^A^A"
	rfcFailureJSON = `{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}`
	googleToken    = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
	googleXOAuth2  = "user=someuser@example.com^Aauth=Bearer " + googleToken + "^A^A"
)

func kv(s string) []byte { return []byte(strings.ReplaceAll(s, "^A", "\x01")) }
