package introspect

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

// mixedIssuers is a config with two JWT issuers, an introspection issuer and a userinfo issuer,
// each with its own policy.
type mixedIssuers struct {
	jwtA, jwtB *testIdP
	intro, ui  *opaqueIdP
	clk        *clock
	v          *Validator
}

func newMixedIssuers(t *testing.T) *mixedIssuers {
	m := &mixedIssuers{jwtA: newTestIdP(t), jwtB: newTestIdP(t), intro: newOpaqueIdP(t), ui: newOpaqueIdP(t), clk: newClock()}
	a := baseConfig(m.jwtA).Issuers[0]
	b := IssuerConfig{
		Issuer:        m.jwtB.URL(),
		Audience:      []string{"mail"},
		UsernameClaim: "sub",
		Username:      UsernameConfig{AppendDomain: "b.example"},
	}
	ui := m.ui.userinfoIssuer()
	ui.Username.StripDomain = true
	cfg := Config{
		Issuers: []IssuerConfig{a, b, m.intro.introspectionIssuer(t), ui},
		Cache:   CacheConfig{Disabled: true},
	}
	// One client for all four servers: they are all httptest servers with plain http.
	m.v, _ = newValidator(t, m.clk, cfg, WithHTTPClient(http.DefaultClient))
	return m
}

func (m *mixedIssuers) validate(token string) (Identity, error) {
	return m.v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
}

// counts returns the JWKS fetches of A and B and the introspection and userinfo requests.
func (m *mixedIssuers) counts() [4]int64 {
	return [4]int64{m.jwtA.jwks.Load(), m.jwtB.jwks.Load(), m.intro.introspections.Load(), m.ui.userinfos.Load()}
}

func TestRouting(t *testing.T) {
	m := newMixedIssuers(t)
	now := m.clk.Now()
	type step struct {
		name   string
		token  func() string
		setup  func() // before validating; handlers are reset after each step
		kind   error
		reason string
		user   string
		issuer string
		counts [4]int64 // increments of JWKS A, JWKS B, introspection, userinfo
	}
	claimsB := func() map[string]any {
		c := m.jwtB.claims(now)
		c["aud"] = "mail"
		return c
	}
	steps := []step{
		{name: "JWT of A, A's policy", token: func() string { return m.jwtA.sign(t, tokenSpec{}, m.jwtA.claims(now)) },
			user: "alice@example.com", issuer: m.jwtA.URL(), counts: [4]int64{1, 0, 0, 0}},
		{name: "JWT of B, B's policy", token: func() string { return m.jwtB.sign(t, tokenSpec{typ: "-"}, claimsB()) },
			user: "248289761001@b.example", issuer: m.jwtB.URL(), counts: [4]int64{0, 1, 0, 0}},
		{name: "JWT of B with A's audience", token: func() string {
			c := claimsB()
			c["aud"] = "saslgate"
			return m.jwtB.sign(t, tokenSpec{}, c)
		}, kind: ErrInvalidToken, reason: "audience mismatch"},
		{name: "JWT naming A, signed by B's key with A's kid", token: func() string {
			return m.jwtB.sign(t, tokenSpec{}, m.jwtA.claims(now))
		}, kind: ErrInvalidToken, reason: "signature does not verify"},
		{name: "JWT naming B, signed by A's EC key", token: func() string {
			c := claimsB()
			return m.jwtA.sign(t, tokenSpec{alg: "ES256"}, c)
		}, kind: ErrInvalidToken, reason: "signature does not verify"},
		{name: "JWT naming an unknown issuer", token: func() string {
			c := m.jwtA.claims(now)
			c["iss"] = "https://idp.example.net"
			return m.jwtA.sign(t, tokenSpec{}, c)
		}, kind: ErrInvalidToken, reason: "unknown issuer"},
		{name: "opaque token active at the introspection issuer: userinfo not asked",
			token: func() string { return m.intro.issue(m.intro.active(now)) },
			user:  "alice@example.com", issuer: m.intro.URL(), counts: [4]int64{0, 0, 1, 0}},
		{name: "opaque token known to userinfo only: introspection asked first",
			token: func() string { return m.ui.issueUserinfo(m.ui.profile()) },
			user:  "alice", issuer: m.ui.URL(), counts: [4]int64{0, 0, 1, 1}},
		{name: "opaque token known to none", token: func() string { return "op_nobody" },
			kind: ErrInvalidToken, reason: "no issuer knows the token", counts: [4]int64{0, 0, 1, 1}},
		{name: "active but wrong audience is final: userinfo not asked", token: func() string {
			r := m.intro.active(now)
			r["aud"] = "webmail"
			return m.intro.issue(r)
		}, kind: ErrInvalidToken, reason: "audience mismatch", counts: [4]int64{0, 0, 1, 0}},
		{name: "introspection down, userinfo refuses: temporary", token: func() string { return "op_nobody" },
			setup: func() { m.intro.setHandle(respond(http.StatusBadGateway, "text/plain", "down")) },
			kind:  ErrTemporary, reason: "502", counts: [4]int64{0, 0, 1, 1}},
		{name: "introspection down, userinfo accepts", token: func() string { return m.ui.issueUserinfo(m.ui.profile()) },
			setup: func() { m.intro.setHandle(respond(http.StatusBadGateway, "text/plain", "down")) },
			user:  "alice", issuer: m.ui.URL(), counts: [4]int64{0, 0, 1, 1}},
		{name: "JWT naming the introspection issuer goes to it alone", token: func() string {
			c := m.jwtA.claims(now)
			c["iss"] = m.intro.URL()
			return m.jwtA.sign(t, tokenSpec{}, c)
		}, kind: ErrInvalidToken, reason: "not active", counts: [4]int64{0, 0, 1, 0}},
		{name: "JWT naming the introspection issuer, active there", token: func() string {
			c := m.jwtA.claims(now)
			c["iss"] = m.intro.URL()
			token := m.jwtA.sign(t, tokenSpec{}, c)
			m.intro.mu.Lock()
			m.intro.responses[token] = m.intro.active(now)
			m.intro.mu.Unlock()
			return token
		}, user: "alice@example.com", issuer: m.intro.URL(), counts: [4]int64{0, 0, 1, 0}},
		{name: "opaque token with two dots", token: func() string { return m.intro.issue(m.intro.active(now)) + ".x.y" },
			kind: ErrInvalidToken, reason: "no issuer knows", counts: [4]int64{0, 0, 1, 1}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			token := s.token()
			if s.setup != nil {
				s.setup()
			}
			defer m.intro.setHandle(nil)
			before := m.counts()
			id, err := m.validate(token)
			after := m.counts()
			for i := range after {
				if after[i]-before[i] != s.counts[i] {
					t.Errorf("requests (JWKS A, JWKS B, introspection, userinfo) = +%v, want +%v",
						[4]int64{after[0] - before[0], after[1] - before[1], after[2] - before[2], after[3] - before[3]}, s.counts)
					break
				}
			}
			if checkErr(t, err, s.kind, s.reason) != nil {
				return
			}
			if id.User != s.user || id.Issuer != s.issuer {
				t.Errorf("User, Issuer = %q, %q; want %q, %q", id.User, id.Issuer, s.user, s.issuer)
			}
		})
	}
}

// Oversized tokens and headers are refused before anything is decoded or sent anywhere.
func TestHugeTokens(t *testing.T) {
	m := newMixedIssuers(t)
	claims := m.jwtA.claims(m.clk.Now())
	b64 := base64.RawURLEncoding.EncodeToString
	huge := `{"alg":"RS256","kid":"rsa-1","x":"` + strings.Repeat("A", 20<<10) + `"}`
	payload := b64([]byte(`{"iss":"` + m.jwtA.URL() + `"}`))
	claims["pad"] = strings.Repeat("x", maxTokenSize)
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"huge JOSE header", b64([]byte(huge)) + "." + payload + ".c2ln", "JOSE header too large"},
		{"huge claims", m.jwtA.sign(t, tokenSpec{}, claims), "token too large"},
		{"huge opaque token", strings.Repeat("a", maxTokenSize+1), "token too large"},
		{"opaque token with CRLF", "op_a\r\nHost: evil", "malformed token"},
		{"opaque token with NUL", "op_a\x00", "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := m.counts()
			_, err := m.validate(tc.token)
			checkErr(t, err, ErrInvalidToken, tc.reason)
			if m.counts() != before || m.jwtA.discovery.Load() != 0 {
				t.Errorf("IdP requests made: %v → %v", before, m.counts())
			}
		})
	}
}

func TestIsB64Token(t *testing.T) {
	for s, want := range map[string]bool{
		"abc":           true,
		"a-._~+/Z9":     true,
		"abc==":         true,
		"abc=d":         false,
		"=":             false,
		"":              false,
		"a b":           false,
		"a\r\n":         false,
		"a,b":           false,
		"eyJ.eyJ.c2ln":  true,
		"ya29.a0AfH6SM": true,
	} {
		if got := isB64Token(s); got != want {
			t.Errorf("isB64Token(%q) = %v", s, got)
		}
	}
}
