package sasl

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

// The wire forms of RFC 7628 §4.1 (IMAP) and §4.4 (SMTP), which decode to
// rfcIMAP and rfcSMTP: the §4.4 text shows "n,user=…" but its base64 says a=.
const (
	rfcIMAPBase64 = "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
	rfcSMTPBase64 = "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
	rfcErrBase64  = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0="
)

// cbdataExample has the shape of the channel-binding example of
// draft-ietf-kitten-sasl-oauth-03: gs2 flag p=<type> and a cbdata kvpair.
const cbdataExample = "p=tls-unique,a=user@example.com,^Ahost=server.example.com^Aport=143^Acbdata=dGhpcyBpcyBjaGFubmVsIGJpbmRpbmcgZGF0YQ==^Aauth=Bearer " + rfcToken + "^A^A"

func TestRFC7628Examples(t *testing.T) {
	for name, pair := range map[string][2]string{
		"4.1": {rfcIMAPBase64, rfcIMAP},
		"4.4": {rfcSMTPBase64, rfcSMTP},
		"4.3": {rfcErrBase64, rfcFailureJSON},
	} {
		got, err := base64.StdEncoding.DecodeString(pair[0])
		if err != nil || string(got) != string(kv(pair[1])) {
			t.Errorf("RFC 7628 §%s decodes to %q, test uses %q", name, got, kv(pair[1]))
		}
	}
	f := &Failure{Status: StatusInvalidToken, Scope: "example_scope",
		OpenIDConfiguration: "https://example.com/.well-known/openid-configuration"}
	if got := base64.StdEncoding.EncodeToString(f.oauthBearerJSON()); got != rfcErrBase64 {
		t.Errorf("error challenge = %s, RFC 7628 §4.3 has %s", got, rfcErrBase64)
	}
}

func TestParseOAuthBearer(t *testing.T) {
	tests := []struct {
		in   string
		want Credentials
	}{
		{rfcIMAP, Credentials{Token: rfcToken, AuthzID: "user@example.com", Host: "server.example.com", Port: 143, CBFlag: 'n'}},
		{rfcSMTP, Credentials{Token: rfcToken, AuthzID: "user@example.com", Host: "server.example.com", Port: 587, CBFlag: 'n'}},
		{cbdataExample, Credentials{Token: rfcToken, AuthzID: "user@example.com", Host: "server.example.com", Port: 143,
			CBFlag: 'p', CBType: "tls-unique", CBData: []byte("this is channel binding data")}},
		{"n,,^Aauth=Bearer t^A^A", Credentials{Token: "t", CBFlag: 'n'}},
		{"y,,^Aauth=bearer t^A^A", Credentials{Token: "t", CBFlag: 'y'}},
		{"F,n,,^Aauth=BEARER   t^A^A", Credentials{Token: "t", CBFlag: 'n'}},
		{"p=tls-exporter,,^Acbdata=AAECAw==^Aauth=Bearer t^A^A", Credentials{Token: "t", CBFlag: 'p', CBType: "tls-exporter", CBData: []byte{0, 1, 2, 3}}},
		{"n,a=a=2Cb=3Dc=3D,^Aauth=Bearer t^A^A", Credentials{Token: "t", AuthzID: "a,b=c=", CBFlag: 'n'}},
		{"n,a=jörg@exämple.org,^Aauth=Bearer t^A^A", Credentials{Token: "t", AuthzID: "jörg@exämple.org", CBFlag: 'n'}},
		{"n,,^Aport=1^Aauth=Bearer t^Ahost=^A^A", Credentials{Token: "t", Port: 1, CBFlag: 'n'}},
		{"n,,^Aport=65535^Aauth=Bearer t^A^A", Credentials{Token: "t", Port: 65535, CBFlag: 'n'}},
		// RFC 7628 §3.1: reserved and unknown keys are ignored, values may hold '=', HTAB, CR, LF.
		{"n,,^Amthd=POST^Apath=/^Apost=^Aqs=a=b&c=d^Ax=a\tb\r\nc^Aauth=Bearer t^A^A", Credentials{Token: "t", CBFlag: 'n'}},
		{"n,,^Aauth=Bearer aZ09-._~+/==^A^A", Credentials{Token: "aZ09-._~+/==", CBFlag: 'n'}},
	}
	for _, tt := range tests {
		got, err := ParseOAuthBearer(kv(tt.in))
		tt.want.Mechanism = OAuthBearer
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseOAuthBearer(%q)\n = %+v, %v\nwant %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseOAuthBearerMalformed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty"},
		{"^A", "bare kvsep"},
		{"n,,auth=Bearer t^A^A", "not followed by kvsep"},
		{"n", "not terminated"},
		{"n,", "not terminated"},
		{"x,,^Aauth=Bearer t^A^A", "channel-binding flag"},
		{"N,,^Aauth=Bearer t^A^A", "channel-binding flag"},
		{"Fn,,^Aauth=Bearer t^A^A", "channel-binding flag"},
		{"F,F,n,,^Aauth=Bearer t^A^A", "channel-binding flag"},
		{"p=,,^Aauth=Bearer t^A^A", "channel-binding flag"},
		{"p=tls_unique,,^Acbdata=AA==^Aauth=Bearer t^A^A", "channel-binding flag"},
		{"n,user=user@example.com,^Aauth=Bearer t^A^A", "does not start with a="}, // RFC 7628 §4.4 as printed
		{"n,a=,^Aauth=Bearer t^A^A", "authzid is empty"},
		{"n,a=u=,^Aauth=Bearer t^A^A", "'=' not followed"},
		{"n,a=u=2c,^Aauth=Bearer t^A^A", "'=' not followed"},
		{"n,a=u=3,^Aauth=Bearer t^A^A", "'=' not followed"},
		{"n,a=\xff,^Aauth=Bearer t^A^A", "UTF-8"},
		{"n,a=u\x00,^Aauth=Bearer t^A^A", "NUL"},
		{"n,,^Aauth=Bearer t^A", "does not end with kvsep kvsep"},
		{"n,,^Aauth=Bearer t", "does not end with kvsep kvsep"},
		{"n,,^Aauth=Bearer t^A^A^A", "after the closing kvsep"},
		{"n,,^Aauth=Bearer t^A^Ajunk", "after the closing kvsep"},
		{"n,,^A^A", "auth kvpair is missing"},
		{"n,,^Ahost=h^A^A", "auth kvpair is missing"},
		{"n,,^Aauth=Bearer a^Aauth=Bearer b^A^A", "auth appears twice"},
		{"n,,^Ahost=a^Ahost=b^Aauth=Bearer t^A^A", "host appears twice"},
		{"n,,^Aport=1^Aport=1^Aauth=Bearer t^A^A", "port appears twice"},
		{"n,,^A=v^Aauth=Bearer t^A^A", "ALPHA key"},
		{"n,,^Ak1=v^Aauth=Bearer t^A^A", "ALPHA key"},
		{"n,,^Anoequals^Aauth=Bearer t^A^A", "ALPHA key"},
		{"n,,^Ax=\x00^Aauth=Bearer t^A^A", "outside VCHAR"},
		{"n,,^Ax=é^Aauth=Bearer t^A^A", "outside VCHAR"},
		{"n,,^Ax=\x7f^Aauth=Bearer t^A^A", "outside VCHAR"},
		{"n,,^Aport=0^Aauth=Bearer t^A^A", "port"},
		{"n,,^Aport=0143^Aauth=Bearer t^A^A", "port"},
		{"n,,^Aport=65536^Aauth=Bearer t^A^A", "port"},
		{"n,,^Aport=999999^Aauth=Bearer t^A^A", "port"},
		{"n,,^Aport=+143^Aauth=Bearer t^A^A", "port"},
		{"n,,^Aport=^Aauth=Bearer t^A^A", "port"},
		{"n,,^Aauth=Basic dXNlcjpwYXNz^A^A", "not a Bearer credential"},
		{"n,,^Aauth=Bear^A^A", "not a Bearer credential"},
		{"n,,^Aauth=^A^A", "not a Bearer credential"},
		{"n,,^Aauth=Bearer^A^A", "not followed by SP"},
		{"n,,^Aauth=Bearertoken^A^A", "not followed by SP"},
		{"n,,^Aauth=Bearer\tt^A^A", "not followed by SP"},
		{"n,,^Aauth=Bearer ^A^A", "b64token"},
		{"n,,^Aauth=Bearer a b^A^A", "b64token"},
		{"n,,^Aauth=Bearer t ^A^A", "b64token"},
		{"n,,^Aauth=Bearer ab=c^A^A", "b64token"},
		{"n,,^Aauth=Bearer ==^A^A", "b64token"},
		{"n,,^Aauth=Bearer a,b^A^A", "b64token"},
		{"n,,^Acbdata=AAECAw==^Aauth=Bearer t^A^A", "cbdata kvpair without gs2 flag p="},
		{"y,,^Acbdata=AAECAw==^Aauth=Bearer t^A^A", "cbdata kvpair without gs2 flag p="},
		{"p=tls-exporter,,^Aauth=Bearer t^A^A", "p= without a cbdata"},
		{"p=tls-exporter,,^Acbdata=^Aauth=Bearer t^A^A", "cbdata is not base64"},
		{"p=tls-exporter,,^Acbdata=!!!!^Aauth=Bearer t^A^A", "cbdata is not base64"},
		{"p=tls-exporter,,^Acbdata=AAEC\r\nAw==^Aauth=Bearer t^A^A", "cbdata is not base64"},
		{"p=tls-exporter,,^Acbdata=AB==^Aauth=Bearer t^A^A", "cbdata is not base64"}, // non-zero padding bits
		{"p=tls-exporter,,^Acbdata=AAECAw^Aauth=Bearer t^A^A", "cbdata is not base64"},
		{"p=tls-exporter,,^Acbdata=AA==^Acbdata=AA==^Aauth=Bearer t^A^A", "cbdata appears twice"},
	}
	for _, tt := range tests {
		c, err := ParseOAuthBearer(kv(tt.in))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseOAuthBearer(%q) = %+v, %v; want error containing %q", tt.in, c, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "Bearer t") {
			t.Errorf("ParseOAuthBearer(%q): error %q repeats the credential", tt.in, err)
		}
	}
}

func TestEncodeOAuthBearer(t *testing.T) {
	for _, in := range []string{rfcIMAP, rfcSMTP, cbdataExample} {
		c, err := ParseOAuthBearer(kv(in))
		if err != nil {
			t.Fatal(err)
		}
		if got := EncodeOAuthBearer(c); string(got) != string(kv(in)) {
			t.Errorf("EncodeOAuthBearer(%+v)\n = %q\nwant %q", c, got, kv(in))
		}
	}
	c := Credentials{Mechanism: OAuthBearer, Token: "t", AuthzID: "a,b=c", CBFlag: 'y'}
	if got, want := string(EncodeOAuthBearer(c)), "y,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"; got != want {
		t.Errorf("EncodeOAuthBearer = %q, want %q", got, want)
	}
	if got, err := ParseOAuthBearer(EncodeOAuthBearer(c)); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("round trip: %+v, %v; want %+v", got, err, c)
	}
	if got := string(EncodeOAuthBearer(Credentials{Token: "t"})); got != "n,,\x01auth=Bearer t\x01\x01" {
		t.Errorf("zero CBFlag encodes as %q, want gs2 flag n", got)
	}
}

func TestOAuthBearerServer(t *testing.T) {
	rfcFailure := func(Credentials) error {
		return &Failure{Status: StatusInvalidToken, Scope: "example_scope",
			OpenIDConfiguration: "https://example.com/.well-known/openid-configuration"}
	}
	const expiredJSON = `{"status":"invalid_token","scope":"email","openid-configuration":"https://idp.example/.well-known/openid-configuration"}`
	runTranscripts(t, NewOAuthBearer, []transcript{
		{name: "RFC 7628 §4.1 success with initial response", lines: []string{
			"C: " + rfcIMAP,
			"S: OK",
		}},
		{name: "no initial response", lines: []string{
			"C: <nil>",
			"S: + ",
			"C: n,,^Aauth=Bearer good^A^A",
			"S: OK",
		}},
		{name: "RFC 7628 §4.3 failure, client sends kvsep", auth: rfcFailure, lines: []string{
			"C: " + rfcIMAP,
			"S: + " + rfcFailureJSON,
			"C: ^A",
			"S: NO invalid_token",
		}},
		{name: "RFC 7628 §4.4 SMTP failure", auth: rfcFailure, lines: []string{
			"C: " + rfcSMTP,
			"S: + " + rfcFailureJSON,
			"C: ^A",
			"S: NO invalid_token",
		}},
		{name: "failure, empty reply (msmtp)", lines: []string{
			"C: n,a=user@example.com,^Aauth=Bearer expired^A^A",
			"S: + " + expiredJSON,
			"C: ",
			"S: NO invalid_token",
		}},
		{name: "failure, whole initial response again (imaplib) is no new attempt", lines: []string{
			"C: n,,^Aauth=Bearer expired^A^A",
			"S: + " + expiredJSON,
			"C: n,,^Aauth=Bearer good^A^A",
			"S: NO invalid_token",
		}},
		{name: "failure, no reply at all (nil)", lines: []string{
			"C: n,,^Aauth=Bearer expired^A^A",
			"S: + " + expiredJSON,
			"C: <nil>",
			"S: NO invalid_token",
		}},
		{name: "failure, garbage reply", lines: []string{
			"C: n,,^Aauth=Bearer revoked^A^A",
			"S: + " + `{"status":"invalid_token"}`,
			"C: \xff\x00garbage",
			"S: NO invalid_token",
		}},
		{name: "failure after empty challenge", lines: []string{
			"C: <nil>",
			"S: + ",
			"C: n,,^Aauth=Bearer revoked^A^A",
			"S: + " + `{"status":"invalid_token"}`,
			"C: ^A",
			"S: NO invalid_token",
		}},
		{name: "wrapped insufficient_scope failure", lines: []string{
			"C: n,,^Aauth=Bearer narrow^A^A",
			"S: + " + `{"status":"insufficient_scope","scope":"email imap"}`,
			"C: ^A",
			"S: NO insufficient_scope",
		}},
		{name: "bare kvsep as first message", lines: []string{
			"C: ^A",
			"S: + " + `{"status":"invalid_request"}`,
			"C: ^A",
			"S: NO invalid_request",
		}},
		{name: "bare kvsep after empty challenge", lines: []string{
			"C: <nil>",
			"S: + ",
			"C: ^A",
			"S: + " + `{"status":"invalid_request"}`,
			"C: n,,^Aauth=Bearer good^A^A",
			"S: NO invalid_request",
		}},
		{name: "malformed", lines: []string{
			"C: n,,^Aauth=Basic dXNlcjpwYXNz^A^A",
			"S: BAD not a Bearer credential",
		}},
		{name: "empty initial response", lines: []string{
			"C: ",
			"S: BAD message is empty",
		}},
		{name: "nil after the empty challenge", lines: []string{
			"C: <nil>",
			"S: + ",
			"C: <nil>",
			"S: BAD message is empty",
		}},
		{name: "temporary trouble aborts at once", lines: []string{
			"C: n,,^Aauth=Bearer idpdown^A^A",
			"S: ERR IdP unreachable",
		}},
		{name: "Next after success", lines: []string{
			"C: n,,^Aauth=Bearer good^A^A",
			"S: OK",
			"C: ^A",
			"S: ERR exchange already finished",
		}},
		{name: "Next after failure", lines: []string{
			"C: n,,^Aauth=Bearer expired^A^A",
			"S: + " + expiredJSON,
			"C: ^A",
			"S: NO invalid_token",
			"C: <nil>",
			"S: ERR exchange already finished",
		}},
		{name: "Next after malformed", lines: []string{
			"C: garbage",
			"S: BAD gs2 header is not terminated",
			"C: n,,^Aauth=Bearer good^A^A",
			"S: ERR exchange already finished",
		}},
	})
}

func TestOAuthBearerServerCredentials(t *testing.T) {
	var got Credentials
	srv := NewOAuthBearer(func(c Credentials) error { got = c; return nil })
	if _, done, err := srv.Next(kv(cbdataExample)); !done || err != nil {
		t.Fatalf("Next = %v, %v", done, err)
	}
	want, _ := ParseOAuthBearer(kv(cbdataExample))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Authenticator got %+v, want %+v", got, want)
	}
}

func TestOAuthBearerServerFailureIdentity(t *testing.T) {
	f := &Failure{Status: StatusInvalidToken, Err: errors.New("audience mismatch")}
	srv := NewOAuthBearer(func(Credentials) error { return f })
	srv.Next(kv("n,,^Aauth=Bearer t^A^A"))
	_, done, err := srv.Next([]byte{kvsep})
	if !done || err != f {
		t.Errorf("reply to the error challenge: done=%v err=%v, want the Failure itself", done, err)
	}
}

func TestNilFailureFromAuthenticator(t *testing.T) {
	srv := NewOAuthBearer(func(Credentials) error { var f *Failure; return f })
	chal, done, err := srv.Next(kv("n,,^Aauth=Bearer t^A^A"))
	if chal != nil || !done || err == nil {
		t.Errorf("typed nil *Failure: Next = %q, %v, %v; want abort with the error", chal, done, err)
	}
}

func BenchmarkParseOAuthBearer(b *testing.B) {
	msg := kv(rfcIMAP)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOAuthBearer(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCredentialsRedacted(t *testing.T) {
	const token = "s3cr3t.t0ken"
	c := Credentials{Mechanism: OAuthBearer, Token: token, AuthzID: "u@example.com", CBFlag: 'n'}
	var buf strings.Builder
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		slog.New(h).Info("auth", "creds", c)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%v", []Credentials{c}), buf.String()} {
		if strings.Contains(s, token) || !strings.Contains(s, "u@example.com") {
			t.Errorf("credentials shown as %q", s)
		}
	}
}
