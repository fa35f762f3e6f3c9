package e2e

import (
	"strings"
	"testing"
)

// authFails runs `a AUTHENTICATE <mech> <ir>` and checks the RFC 7628 §3.2.2 dance:
// an error challenge whose JSON status is wantStatus, the client's reply, then
// `a NO [AUTHENTICATIONFAILED]`.
func authFails(t *testing.T, w *wire, mech, ir, wantStatus, reply string) {
	t.Helper()
	w.send("a AUTHENTICATE " + mech + " " + ir)
	js := w.errorChallenge()
	if js["status"] != wantStatus {
		t.Errorf("error JSON status = %v, want %q", js["status"], wantStatus)
	}
	if oc, ok := js["openid-configuration"]; ok {
		if _, isStr := oc.(string); !isStr {
			t.Errorf("openid-configuration = %v, want a string", oc)
		}
	}
	w.send(reply)
	w.expectTagged("a", "NO [AUTHENTICATIONFAILED]")
}

// TestBadTokens: every token the proxy must refuse, over implicit TLS with
// OAUTHBEARER and SASL-IR, answered with the error challenge and then NO.
func TestBadTokens(t *testing.T) {
	e := e2e(t)
	good, kid := e.validClaims(t)
	realToken := e.mint(t, e.idp, mintRequest{})
	hsPEM, hsDER := e.hmacWithPublicKeyTokens(t, kid, good)

	cases := []struct {
		name   string
		token  func() string
		authz  string // OAUTHBEARER a=; "" for none
		status string
	}{
		{"expired", func() string { return e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) }, mailUser, "invalid_token"},
		{"wrong audience", func() string { return e.mint(t, e.idp, mintRequest{Aud: "not-saslgate"}) }, mailUser, "invalid_token"},
		{"wrong issuer (other oidc-provider)", func() string { return e.mint(t, e.otherIdP, mintRequest{}) }, mailUser, "invalid_token"},
		{"right iss, unknown kid, fresh key", func() string { return e.freshKeyToken(t, "e2e-unknown-kid", good) }, mailUser, "invalid_token"},
		{"right iss, real kid, fresh key", func() string { return e.freshKeyToken(t, kid, good) }, mailUser, "invalid_token"},
		{"alg none", func() string { return algNoneToken(t, kid, good) }, mailUser, "invalid_token"},
		{"HS256 keyed with the IdP public key (PEM)", func() string { return hsPEM }, mailUser, "invalid_token"},
		{"HS256 keyed with the IdP public key (DER)", func() string { return hsDER }, mailUser, "invalid_token"},
		{"tampered payload, real signature", func() string { return tamperedToken(t, realToken, withClaims(good, "email", mailUser2)) }, mailUser2, "invalid_token"},
		{"not a JWT", func() string { return "bm90LWEtand0" }, mailUser, "invalid_token"},
		{"email claim with CRLF", func() string {
			return e.mint(t, e.idp, mintRequest{Claims: map[string]any{"email": "alice@example.com\r\nx LOGIN bob@example.com secret"}})
		}, "", "invalid_token"},
		{"email claim with a quote", func() string {
			return e.mint(t, e.idp, mintRequest{Claims: map[string]any{"email": `ali"ce@example.com`}})
		}, "", "invalid_token"},
		{"email claim not a string", func() string {
			return e.mint(t, e.idp, mintRequest{Claims: map[string]any{"email": []string{mailUser}}})
		}, "", "invalid_token"},
		{"missing email scope", func() string { return e.mint(t, e.idp, mintRequest{Scope: "openid imap"}) }, mailUser, "insufficient_scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := dialWire(t, e.gate.imaps, e.tlsConfig())
			w.greeting()
			authFails(t, w, "OAUTHBEARER", oauthBearerIR(tc.authz, "", 0, tc.token()), tc.status, "AQ==")
			// The connection stays usable for another attempt (RFC 3501: NO is not fatal).
			w.send("b NOOP")
			w.expectTagged("b", "OK")
		})
	}
}

// TestBadTokenXOAUTH2: XOAUTH2's error challenge is Google's JSON with an HTTP-style
// status; clients answer with an empty line.
func TestBadTokenXOAUTH2(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.imaps, e.tlsConfig())
	w.greeting()
	authFails(t, w, "XOAUTH2", xoauth2IR(mailUser, e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60})), "401", "")
}

// TestErrorChallengeReplies: whatever the client answers to the error challenge
// (SPECS.md lists what real clients send), the exchange ends with NO.
func TestErrorChallengeReplies(t *testing.T) {
	e := e2e(t)
	expired := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60})
	ir := oauthBearerIR(mailUser, "", 0, expired)
	for _, tc := range []struct{ name, reply string }{
		{"AQ==", "AQ=="},
		{"empty line", ""},
		{"initial response again (imaplib)", ir},
		{"garbage", "!!notbase64!!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := dialWire(t, e.gate.imaps, e.tlsConfig())
			w.greeting()
			authFails(t, w, "OAUTHBEARER", ir, "invalid_token", tc.reply)
		})
	}
	t.Run("silent client", func(t *testing.T) {
		// error_reply_timeout is 1s in the config: the proxy must not wait for the
		// pre-auth timeout.
		w := dialWire(t, e.gate.imaps, e.tlsConfig())
		w.greeting()
		w.send("a AUTHENTICATE OAUTHBEARER " + ir)
		w.errorChallenge()
		w.expectTagged("a", "NO [AUTHENTICATIONFAILED]")
	})
}

// TestTemporaryFailures: trouble that is not the client's fault is NO [UNAVAILABLE]
// at once, without an error challenge (DESIGN.md error table).
func TestTemporaryFailures(t *testing.T) {
	e := e2e(t)
	good, _ := e.validClaims(t)
	for _, tc := range []struct {
		name  string
		addr  func() string
		token func() string
		user  string
	}{
		{"IdP unreachable", func() string { return e.gate.imaps },
			func() string { return e.freshKeyToken(t, "dead-kid", withClaims(good, "iss", e.deadIss)) }, mailUser},
		{"backend rejects the derived secret", func() string { return e.gate.imaps },
			func() string {
				return e.mint(t, e.idp, mintRequest{Sub: "carol", Claims: map[string]any{"email": noDovecot}})
			}, noDovecot},
		{"backend down", func() string { return e.deadGate.imaps },
			func() string { return e.mint(t, e.idp, mintRequest{}) }, mailUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := dialWire(t, tc.addr(), e.tlsConfig())
			w.greeting()
			w.send("a AUTHENTICATE OAUTHBEARER " + oauthBearerIR(tc.user, "", 0, tc.token()))
			w.expectTagged("a", "NO [UNAVAILABLE]")
		})
	}
}

// TestAuthzidAndHostChecks: a=<someone else> and a host= that is not the listener's
// public name must not log in (DESIGN.md "Tokens and policy").
func TestAuthzidAndHostChecks(t *testing.T) {
	e := e2e(t)
	tok := e.mint(t, e.idp, mintRequest{})
	for _, tc := range []struct{ name, ir string }{
		{"authzid of another user", oauthBearerIR(mailUser2, "", 0, tok)},
		{"host mismatch", oauthBearerIR(mailUser, "evil.example", 0, tok)},
		{"port mismatch", oauthBearerIR(mailUser, "127.0.0.1", 1, tok)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := dialWire(t, e.gate.imaps, e.tlsConfig())
			w.greeting()
			w.send("a AUTHENTICATE OAUTHBEARER " + tc.ir)
			line, err := w.readLine(wireTimeout)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if strings.HasPrefix(line, "+ ") {
				w.send("AQ==")
				line = w.expect("a ")
			}
			if !strings.HasPrefix(line, "a NO") {
				t.Fatalf("got %q, want a tagged NO", line)
			}
		})
	}
}
