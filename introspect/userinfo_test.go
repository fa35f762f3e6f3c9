package introspect

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

func TestUserinfo(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	type members = map[string]any
	tests := []struct {
		name   string
		resp   func(m members)
		handle func(http.ResponseWriter, *http.Request) bool
		cfg    func(ic *IssuerConfig)
		token  string
		kind   error
		reason string
		scope  string
		noAsk  bool
	}{
		{name: "valid"},
		{name: "unknown token: 401", token: "op_unknown", kind: ErrInvalidToken, reason: "refused the token (401)"},
		{name: "403", handle: respond(http.StatusForbidden, "", ""), kind: ErrInvalidToken, reason: "(403)"},
		{name: "500", handle: respond(http.StatusInternalServerError, "text/plain", "oops"), kind: ErrTemporary, reason: "500"},
		{name: "502", handle: respond(http.StatusBadGateway, "text/html", "<html>bad gateway</html>"), kind: ErrTemporary, reason: "502"},
		{name: "400 is the IdP's problem", handle: respond(http.StatusBadRequest, "application/json", `{"error":"invalid_request"}`), kind: ErrTemporary, reason: "400"},
		{name: "200 with HTML", handle: respond(200, "text/html", "<html>login</html>"), kind: ErrTemporary, reason: "not JSON"},
		{name: "signed userinfo JWT is not supported", handle: respond(200, "application/jwt", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"), kind: ErrTemporary, reason: "not JSON"},
		{name: "username claim missing", resp: func(m members) { delete(m, "email") }, kind: ErrInvalidToken, reason: "username claim email missing"},
		{name: "scopes required, none returned", cfg: func(ic *IssuerConfig) { ic.Scopes = map[string][]string{"imap": {"email"}} },
			kind: ErrInsufficientScope, reason: `"email"`, scope: "email"},
		{name: "scopes required and returned", resp: func(m members) { m["scope"] = "openid email" },
			cfg: func(ic *IssuerConfig) { ic.Scopes = map[string][]string{"imap": {"email"}} }},
		{name: "client allow-list, no client in answer", cfg: func(ic *IssuerConfig) { ic.AllowedClientIDs = []string{"thunderbird"} },
			kind: ErrInvalidToken, reason: "not allowed"},
		{name: "iss in answer must match", resp: func(m members) { m["iss"] = "https://idp.example.net" }, kind: ErrInvalidToken, reason: "issuer mismatch"},
		{name: "exp in answer is checked", resp: func(m members) { m["exp"] = clk.Now().Add(-time.Hour).Unix() }, kind: ErrInvalidToken, reason: "expired"},
		{name: "not a b64token", token: "op abc", kind: ErrInvalidToken, reason: "malformed token", noAsk: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic := idp.userinfoIssuer()
			if tt.cfg != nil {
				tt.cfg(&ic)
			}
			if h := tt.handle; h != nil {
				idp.setHandle(func(w http.ResponseWriter, r *http.Request) bool { return r.URL.Path == "/userinfo" && h(w, r) })
				defer idp.setHandle(nil)
			}
			v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}, Cache: CacheConfig{Disabled: true}}, WithHTTPClient(idp.srv.Client()))
			resp := idp.profile()
			if tt.resp != nil {
				tt.resp(resp)
			}
			token := cmp(tt.token, idp.issueUserinfo(resp))
			before := idp.userinfos.Load()
			id, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
			if asked := idp.userinfos.Load() - before; (asked == 0) != tt.noAsk {
				t.Errorf("userinfo requests = %d", asked)
			}
			e := checkErr(t, err, tt.kind, tt.reason)
			if e != nil {
				if e.Scope != tt.scope {
					t.Errorf("Scope = %q, want %q", e.Scope, tt.scope)
				}
				if strings.Contains(e.Error(), token) {
					t.Error("error contains the token")
				}
				return
			}
			if id.User != "alice@example.com" || id.Subject != "248289761001" || id.Issuer != idp.URL() || !id.Expiry.IsZero() {
				t.Errorf("Identity = %+v", id)
			}
		})
	}
}

// A userinfo answer has no expiry: it is reused for the configured TTL, no longer.
func TestUserinfoCacheTTL(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	cfg := Config{Issuers: []IssuerConfig{idp.userinfoIssuer()}, Cache: CacheConfig{TTL: config.Duration(time.Minute)}}
	v, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	req := Request{Token: idp.issueUserinfo(idp.profile()), Protocol: "imap"}
	for _, step := range []struct {
		advance time.Duration
		asked   int64
	}{{0, 1}, {59 * time.Second, 1}, {time.Second, 2}, {30 * time.Second, 2}} {
		clk.Add(step.advance)
		if _, err := v.Validate(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if got := idp.userinfos.Load(); got != step.asked {
			t.Fatalf("after +%v: userinfo requests = %d, want %d", step.advance, got, step.asked)
		}
	}
}
