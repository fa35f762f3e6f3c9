package introspect

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// "exp", "nbf" and "iat" are NumericDates (RFC 7519 §2): JSON numbers, integer or not. A
// number written as a string, which encoding/json's Number and go-oidc's verifier both take,
// is malformed, in a signed JWT, an introspection response and a userinfo answer alike: the
// token is invalid (RFC 6750 §3.1), as for any other malformed claim of an answer that says
// the token is active.
func TestNumericDateClaims(t *testing.T) {
	jwtIdP, opaque := newTestIdP(t), newOpaqueIdP(t)
	clk := newClock()
	now := clk.Now()
	exp, iat := now.Add(time.Hour).Unix(), now.Unix()
	noCache := CacheConfig{Disabled: true}
	modes := []struct {
		name   string
		cfg    Config
		client *http.Client
		claims func() map[string]any
		issue  func(map[string]any) string
	}{
		{"jwt", baseConfig(jwtIdP), jwtIdP.srv.Client(),
			func() map[string]any { return jwtIdP.claims(now) },
			func(c map[string]any) string { return jwtIdP.sign(t, tokenSpec{}, c) }},
		{"introspection", Config{Issuers: []IssuerConfig{opaque.introspectionIssuer(t)}, Cache: noCache}, opaque.srv.Client(),
			func() map[string]any { return opaque.active(now) },
			opaque.issue},
		{"userinfo", Config{Issuers: []IssuerConfig{opaque.userinfoIssuer()}, Cache: noCache}, opaque.srv.Client(),
			func() map[string]any {
				m := opaque.profile()
				m["exp"], m["iat"] = exp, iat
				return m
			},
			opaque.issueUserinfo},
	}
	str := func(n int64) string { return strconv.FormatInt(n, 10) }
	const invalid = "invalid token"
	const notNumber = "malformed claims: introspect: exp, nbf or iat is not a JSON number"
	values := []struct {
		name  string
		claim string
		value any // json.RawMessage goes out as it is; nil is JSON null
		// want is "" for a valid token, else a text of the ErrInvalidToken error. notNumber is
		// for a value that gets past go-oidc's checks of a JWT, so only the policy refuses it.
		want string
	}{
		{"exp integer", "exp", exp, ""},
		{"exp non-integer", "exp", float64(exp) + 0.75, ""},
		{"exp with an exponent", "exp", json.RawMessage(str(exp) + "e0"), ""},
		{"exp as a string", "exp", str(exp), notNumber},
		{"exp as a string with a fraction", "exp", str(exp) + ".5", notNumber},
		{"exp true", "exp", true, invalid},
		{"exp object", "exp", map[string]any{"$date": exp}, invalid},
		{"exp array", "exp", []int64{exp}, invalid},
		{"exp beyond float64", "exp", json.RawMessage("1e400"), invalid},
		{"nbf integer", "nbf", iat, ""},
		{"nbf non-integer", "nbf", float64(iat) - 0.5, ""},
		{"nbf null is an absent nbf", "nbf", nil, ""},
		{"nbf as a string", "nbf", str(iat), notNumber},
		{"nbf false", "nbf", false, invalid},
		{"nbf object", "nbf", map[string]any{}, invalid},
		{"iat integer", "iat", iat, ""},
		{"iat non-integer", "iat", float64(iat) + 0.25, ""},
		{"iat as a string", "iat", str(iat), notNumber},
		{"iat true", "iat", true, invalid},
		{"iat array", "iat", []any{}, invalid},
	}
	for _, m := range modes {
		v, _ := newValidator(t, clk, m.cfg, WithHTTPClient(m.client))
		for _, tt := range values {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				c := m.claims()
				c[tt.claim] = tt.value
				id, err := v.Validate(context.Background(), Request{Token: m.issue(c), Protocol: "imap"})
				if tt.want != "" {
					checkErr(t, err, ErrInvalidToken, tt.want)
					return
				}
				checkErr(t, err, nil, "")
				if want := time.Unix(exp, 0); !id.Expiry.Equal(want) {
					t.Errorf("Expiry = %v, want %v", id.Expiry, want)
				}
			})
		}
	}
}
