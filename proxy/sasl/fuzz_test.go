package sasl

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	gosasl "github.com/emersion/go-sasl"
)

// b64tokenRE is RFC 6750 §2.1 b64token, written independently of the parser
// as the fuzz oracle.
var b64tokenRE = regexp.MustCompile(`^[A-Za-z0-9._~+/-]+=*$`)

// oauthBearerSeeds are the RFC 7628 §4 client responses (decoded), the
// draft-ietf-kitten-sasl-oauth-03 style cbdata response, the kvsep reply and
// a few edge cases of the parser tables.
var oauthBearerSeeds = []string{
	rfcIMAP, // §4.1 and §4.3
	rfcSMTP, // §4.4, as its base64 says
	"n,user=user@example.com,^Ahost=server.example.com^Aport=587^Aauth=Bearer " + rfcToken + "^A^A", // §4.4 as printed
	// §4.2 (OAuth 1.0a, mechanism OAUTH10A): not a Bearer credential.
	`n,a=user@example.com,^Ahost=example.com^Aport=143^Aauth=OAuth realm="Example",oauth_consumer_key="9djdj82h48djs9d2",oauth_token="kkk9d7dh3k39sjv7",oauth_signature_method="HMAC-SHA1",oauth_timestamp="137131201",oauth_nonce="7d8f3e4a",oauth_signature="SSdtIGEgbGl0dGxlIHRlYSBwb3Qu"^A^A`,
	cbdataExample,
	"^A",
	"",
	"F,y,a=a=2Cb=3D,^Amthd=GET^Aauth=bearer t==^A^A",
	"p=tls-exporter,,^Acbdata=AAECAw==^Aauth=Bearer t^A^A",
	"n,,^Aauth=Bearer expired^A^A",
}

var xoauth2Seeds = []string{
	googleXOAuth2,
	"auth=Bearer t^Auser=u@example.com^A^A",
	"user=u@example.com^Aauth=Bearer expired^A^A",
	"user=^Aauth=bearer t==^Ax=y^A^A",
	"^A",
	"",
	rfcIMAP,
}

func FuzzParseOAuthBearer(f *testing.F) {
	for _, s := range oauthBearerSeeds {
		f.Add(kv(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		c, err := ParseOAuthBearer(msg)
		if err != nil {
			checkParseError(t, c, err)
			return
		}
		checkCredentials(t, c, OAuthBearer)
		if (c.CBFlag == 'p') != (c.CBData != nil) || (c.CBFlag == 'p') != (c.CBType != "") {
			t.Fatalf("flag %q with CBType %q and CBData %v", c.CBFlag, c.CBType, c.CBData)
		}
		again, err := ParseOAuthBearer(EncodeOAuthBearer(c))
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip of %+v: %+v, %v", c, again, err)
		}
	})
}

func FuzzParseXOAuth2(f *testing.F) {
	for _, s := range xoauth2Seeds {
		f.Add(kv(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		c, err := ParseXOAuth2(msg)
		if err != nil {
			checkParseError(t, c, err)
			return
		}
		checkCredentials(t, c, XOAuth2)
		if c.CBFlag != 'n' || c.CBData != nil || c.Host != "" || c.Port != 0 {
			t.Fatalf("XOAUTH2 credentials carry OAUTHBEARER fields: %+v", c)
		}
		again, err := ParseXOAuth2(EncodeXOAuth2(c.AuthzID, c.Token))
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip of %+v: %+v, %v", c, again, err)
		}
	})
}

func checkParseError(t *testing.T, c Credentials, err error) {
	t.Helper()
	// malformed errors carry fixed texts only: nothing of the message.
	if _, ok := err.(malformed); !ok || !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v (%T) is not a malformed error", err, err)
	}
	if !reflect.DeepEqual(c, Credentials{}) {
		t.Fatalf("error %v with credentials %+v", err, c)
	}
}

func checkCredentials(t *testing.T, c Credentials, mech string) {
	t.Helper()
	if c.Mechanism != mech || !b64tokenRE.MatchString(c.Token) {
		t.Fatalf("bad credentials %v, token %q", c, c.Token)
	}
	if c.Port < 0 || c.Port > 65535 || c.CBFlag != 'n' && c.CBFlag != 'y' && c.CBFlag != 'p' {
		t.Fatalf("bad credentials %+v", c)
	}
}

// The reply to the error challenge as real clients send it (SPECS.md "How
// real clients behave"): kvsep, an empty response, the whole initial
// response again, or nothing at all.
func addServerSeeds(f *testing.F, seeds []string) {
	for _, s := range seeds {
		for _, reply := range []string{"^A", "", s} {
			f.Add(kv(s), kv(reply), false, false)
		}
		f.Add(kv(s), []byte(nil), false, true)
		f.Add([]byte(nil), kv(s), true, false)
	}
}

func FuzzOAuthBearerServer(f *testing.F) {
	addServerSeeds(f, oauthBearerSeeds)
	f.Fuzz(func(t *testing.T, first, second []byte, firstNil, secondNil bool) {
		fuzzServer(t, NewOAuthBearer, first, second, firstNil, secondNil)
	})
}

func FuzzXOAuth2Server(f *testing.F) {
	addServerSeeds(f, xoauth2Seeds)
	f.Fuzz(func(t *testing.T, first, second []byte, firstNil, secondNil bool) {
		fuzzServer(t, NewXOAuth2, first, second, firstNil, secondNil)
	})
}

// fuzzServer runs one exchange and checks the state machine: an empty
// challenge only for a missing initial response, an error challenge is JSON
// and is followed by the Failure whatever the client says, success only for a
// good token, and nothing but errors once done.
func fuzzServer(t *testing.T, newServer func(Authenticator) gosasl.Server, first, second []byte, firstNil, secondNil bool) {
	if firstNil {
		first = nil
	}
	if secondNil {
		second = nil
	}
	var last Credentials
	srv := newServer(func(c Credentials) error { last = c; return testAuth(c) })
	failed, finished := false, false
	for i, msg := range [][]byte{first, second, second, first} {
		chal, done, err := srv.Next(msg)
		var f *Failure
		switch {
		case finished:
			if !done || chal != nil || !errors.Is(err, gosasl.ErrUnexpectedClientResponse) {
				t.Fatalf("call %d after done: %q, %v, %v", i, chal, done, err)
			}
		case failed:
			if !done || chal != nil || !errors.As(err, &f) {
				t.Fatalf("call %d after the error challenge: %q, %v, %v", i, chal, done, err)
			}
			finished = true
		case !done:
			if err != nil || chal == nil {
				t.Fatalf("call %d: continuing with %q, %v", i, chal, err)
			}
			if len(chal) == 0 {
				if i != 0 || msg != nil {
					t.Fatalf("call %d: empty challenge for message %q", i, msg)
				}
				continue
			}
			var e map[string]string
			if json.Unmarshal(chal, &e) != nil || e["status"] == "" {
				t.Fatalf("call %d: error challenge %q is not JSON with a status", i, chal)
			}
			failed = true
		default:
			if chal != nil {
				t.Fatalf("call %d: done with challenge %q", i, chal)
			}
			if err == nil && testAuth(last) != nil {
				t.Fatalf("call %d: success for %+v", i, last)
			}
			finished = true
		}
	}
	if !finished {
		t.Fatal("exchange not finished after four calls")
	}
}

// gs2HeaderRE is RFC 5801 §4's gs2-header with RFC 5056 cb-name, written independently of
// the parser as the fuzz oracle (saslname's UTF-8 rule is checked separately).
var gs2HeaderRE = regexp.MustCompile(`^(F,)?(n|y|p=[A-Za-z0-9.-]+),(a=([^,=\x00]|=2C|=3D)+)?,$`)

// FuzzGS2Header fuzzes the GS2 header alone, in front of a valid OAUTHBEARER body that
// carries cbdata exactly when the header asks for channel binding.
func FuzzGS2Header(f *testing.F) {
	for _, s := range []string{
		"n,,", "y,,", "F,n,,", "p=tls-exporter,,", "p=tls-server-end-point,a=user@example.com,",
		"p=tls-unique,a=user@example.com,", "n,a=a=2Cb=3D,", "p=,,", "p=tls exporter,,", "x,,",
		"n,a=,", "n,user=x,", "n,a=bad=3,", "F,F,n,,", "n,,,", "n", "P=tls-exporter,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hdr string) {
		if strings.ContainsRune(hdr, kvsep) {
			return
		}
		body := "\x01auth=Bearer t\x01\x01"
		bind := strings.HasPrefix(strings.TrimPrefix(hdr, "F,"), "p=")
		if bind {
			body = "\x01cbdata=AAECAw==\x01auth=Bearer t\x01\x01"
		}
		c, err := ParseOAuthBearer([]byte(hdr + body))
		m := gs2HeaderRE.FindStringSubmatch(hdr)
		valid := m != nil && utf8.ValidString(hdr)
		if (err == nil) != valid {
			t.Fatalf("header %q: err %v, RFC 5801 grammar says valid=%v", hdr, err, valid)
		}
		if err != nil {
			return
		}
		flag := m[2]
		switch {
		case flag == "n" || flag == "y":
			if c.CBFlag != flag[0] || c.CBType != "" || c.CBData != nil {
				t.Fatalf("header %q: flag %q type %q data %v", hdr, c.CBFlag, c.CBType, c.CBData)
			}
		default:
			if c.CBFlag != 'p' || c.CBType != flag[2:] || !bind || len(c.CBData) != 4 {
				t.Fatalf("header %q: flag %q type %q data %v", hdr, c.CBFlag, c.CBType, c.CBData)
			}
		}
		want := strings.NewReplacer("=2C", ",", "=3D", "=").Replace(strings.TrimPrefix(m[3], "a="))
		if c.AuthzID != want {
			t.Fatalf("header %q: authzid %q, want %q", hdr, c.AuthzID, want)
		}
		// Without its cbdata, p= is refused; with cbdata, n and y are.
		swapped := "\x01auth=Bearer t\x01\x01"
		if !bind {
			swapped = "\x01cbdata=AAECAw==\x01auth=Bearer t\x01\x01"
		}
		if _, err := ParseOAuthBearer([]byte(hdr + swapped)); err == nil {
			t.Fatalf("header %q accepted with cbdata=%v", hdr, !bind)
		}
	})
}
