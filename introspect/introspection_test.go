package introspect

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// respond makes an IdP handler answer with a fixed status, content type and body.
func respond(status int, contentType, body string) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, _ *http.Request) bool {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		} else {
			w.Header()["Content-Type"] = nil // no sniffing: send none
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
		return true
	}
}

func TestIntrospection(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	now := clk.Now()
	type members = map[string]any
	tests := []struct {
		name    string
		resp    func(m members)                               // edits the active response
		handle  func(http.ResponseWriter, *http.Request) bool // replaces the endpoint's answer
		cfg     func(ic *IssuerConfig)                        // edits the issuer config
		token   string                                        // default: a fresh token with resp
		proto   string                                        // default "imap"
		kind    error                                         // nil: valid
		reason  string
		user    string // expected Identity.User when valid (default alice@example.com)
		scope   string // expected Error.Scope
		noAsk   bool   // the token must not reach the IdP
		expires bool   // Identity.Expiry must be zero
	}{
		{name: "valid, client_secret_basic"},
		{name: "valid, client_secret_post", cfg: func(ic *IssuerConfig) { ic.ClientAuth = clientSecretPost }},
		{name: "inactive", resp: func(m members) { m["active"] = false }, kind: ErrInvalidToken, reason: "not active"},
		{name: "unknown token", token: "op_unknown", kind: ErrInvalidToken, reason: "not active"},
		{name: "without active", resp: func(m members) { delete(m, "active") }, kind: ErrTemporary, reason: `without "active"`},
		{name: "active is a string", resp: func(m members) { m["active"] = "true" }, kind: ErrTemporary, reason: "not a boolean"},
		{name: "active is 1", resp: func(m members) { m["active"] = 1 }, kind: ErrTemporary, reason: "not a boolean"},
		{name: "active is null", resp: func(m members) { m["active"] = nil }, kind: ErrTemporary, reason: "not a boolean"},
		{name: "wrong aud", resp: func(m members) { m["aud"] = "webmail" }, kind: ErrInvalidToken, reason: "audience mismatch"},
		{name: "aud missing", resp: func(m members) { delete(m, "aud") }, kind: ErrInvalidToken, reason: "audience mismatch"},
		{name: "aud list", resp: func(m members) { m["aud"] = []string{"webmail", "saslgate"} }},
		{name: "aud check skipped", resp: func(m members) { delete(m, "aud") },
			cfg: func(ic *IssuerConfig) { ic.Audience, ic.InsecureSkipAudienceCheck = nil, true }},
		{name: "wrong iss", resp: func(m members) { m["iss"] = "https://idp.example.net" }, kind: ErrInvalidToken, reason: "issuer mismatch"},
		{name: "empty iss", resp: func(m members) { m["iss"] = "" }, kind: ErrInvalidToken, reason: "issuer mismatch"},
		{name: "iss absent", resp: func(m members) { delete(m, "iss") }},
		{name: "client allowed", cfg: func(ic *IssuerConfig) { ic.AllowedClientIDs = []string{"mutt", "thunderbird"} }},
		{name: "client not allowed", cfg: func(ic *IssuerConfig) { ic.AllowedClientIDs = []string{"mutt"} },
			kind: ErrInvalidToken, reason: `client "thunderbird" not allowed`},
		{name: "client from azp", resp: func(m members) { delete(m, "client_id"); m["azp"] = "mutt" },
			cfg: func(ic *IssuerConfig) { ic.AllowedClientIDs = []string{"mutt"} }},
		{name: "no client, allow-list set", resp: func(m members) { delete(m, "client_id") },
			cfg:  func(ic *IssuerConfig) { ic.AllowedClientIDs = []string{"thunderbird"} },
			kind: ErrInvalidToken, reason: "not allowed"},
		{name: "expired", resp: func(m members) { m["exp"] = now.Add(-time.Minute).Unix() }, kind: ErrInvalidToken, reason: "expired"},
		{name: "expired within leeway", resp: func(m members) { m["exp"] = now.Add(-20 * time.Second).Unix() }},
		{name: "exp absent", resp: func(m members) { delete(m, "exp") }, expires: true},
		{name: "exp not a number", resp: func(m members) { m["exp"] = "soon" }, kind: ErrInvalidToken, reason: "malformed"},
		{name: "nbf in future", resp: func(m members) { m["nbf"] = now.Add(time.Minute).Unix() }, kind: ErrInvalidToken, reason: "not yet valid"},
		{name: "missing scope", resp: func(m members) { m["scope"] = "openid profile" },
			kind: ErrInsufficientScope, reason: `"email"`, scope: "email"},
		{name: "scope absent, never taken from aud",
			resp: func(m members) { delete(m, "scope"); m["aud"] = []string{"saslgate", "email"} },
			kind: ErrInsufficientScope, reason: `"email"`, scope: "email"},
		{name: "one of two scopes", proto: "smtp", kind: ErrInsufficientScope, reason: `"smtp"`, scope: "email smtp"},
		{name: "all scopes", proto: "smtp", resp: func(m members) { m["scope"] = "smtp openid email" }},
		{name: "scope not a string", resp: func(m members) { m["scope"] = 7 }, kind: ErrInvalidToken, reason: "malformed claims"},
		{name: "username claim missing", resp: func(m members) { delete(m, "username") }, kind: ErrInvalidToken, reason: "username claim username missing"},
		{name: "username with CRLF", resp: func(m members) { m["username"] = "alice\r\nA1 LOGOUT" }, kind: ErrInvalidToken, reason: "control byte"},
		{name: "username from sub", cfg: func(ic *IssuerConfig) {
			ic.UsernameClaim, ic.Username = "sub", UsernameConfig{AppendDomain: "mail.example.com"}
		}, user: "248289761001@mail.example.com"},
		{name: "token_type bearer", resp: func(m members) { m["token_type"] = "bearer" }},
		{name: "token_type absent", resp: func(m members) { delete(m, "token_type") }},
		{name: "refresh token", resp: func(m members) { m["token_type"] = "refresh_token" }, kind: ErrInvalidToken, reason: "not Bearer"},
		{name: "DPoP token_type", resp: func(m members) { m["token_type"] = "DPoP" }, kind: ErrInvalidToken, reason: "not Bearer"},
		{name: "DPoP-bound cnf", resp: func(m members) { m["cnf"] = members{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"} },
			kind: ErrInvalidToken, reason: "DPoP"},
		{name: "cnf thumbprint", resp: func(m members) {
			m["cnf"] = members{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}
		}},
		{name: "200 with HTML", handle: respond(200, "text/html; charset=utf-8", "<html><body>Sign in</body></html>"),
			kind: ErrTemporary, reason: "not JSON"},
		{name: "200 with HTML, no content type", handle: respond(200, "", "<html></html>"),
			kind: ErrTemporary, reason: "not a JSON object"},
		{name: "200 with JSON array", handle: respond(200, "application/json", `[{"active":true}]`),
			kind: ErrTemporary, reason: "not a JSON object"},
		{name: "200 with null", handle: respond(200, "application/json", `null`),
			kind: ErrTemporary, reason: "not a JSON object"},
		{name: "500", handle: respond(500, "text/plain", "oops"), kind: ErrTemporary, reason: "500"},
		{name: "503", handle: respond(503, "application/json", `{"active":true}`), kind: ErrTemporary, reason: "503"},
		{name: "redirect not followed", handle: func(w http.ResponseWriter, r *http.Request) bool {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			return true
		}, kind: ErrTemporary, reason: "307"},
		{name: "oversized response", handle: respond(200, "application/json", `{"active":true,"pad":"`+strings.Repeat("x", maxResponseSize)+`"}`),
			kind: ErrTemporary, reason: "larger than"},
		{name: "wrong client secret", cfg: func(ic *IssuerConfig) {
			f := filepath.Join(t.TempDir(), "wrong")
			os.WriteFile(f, []byte("wrong"), 0o600)
			ic.ClientSecretFile = f
		}, kind: ErrTemporary, reason: "401"},
		{name: "wrong client auth method", cfg: func(ic *IssuerConfig) { ic.ClientAuth = clientSecretPost },
			handle: func(w http.ResponseWriter, r *http.Request) bool {
				if _, _, ok := r.BasicAuth(); !ok {
					http.Error(w, "basic only", http.StatusUnauthorized)
					return true
				}
				return false
			}, kind: ErrTemporary, reason: "401"},
		{name: "not a b64token", token: "op_abc\r\nX-Injected: 1", kind: ErrInvalidToken, reason: "malformed token", noAsk: true},
		{name: "unknown protocol", proto: "pop3", kind: ErrInvalidToken, reason: "unknown protocol", noAsk: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ic := idp.introspectionIssuer(t)
			if tt.cfg != nil {
				tt.cfg(&ic)
			}
			idp.wantAuth = ic.ClientAuth
			if idp.wantAuth == "" || tt.handle != nil {
				idp.wantAuth = clientSecretBasic
			}
			if h := tt.handle; h != nil {
				idp.setHandle(func(w http.ResponseWriter, r *http.Request) bool { return r.URL.Path == "/introspect" && h(w, r) })
				defer idp.setHandle(nil)
			}
			cfg := Config{Issuers: []IssuerConfig{ic}, Cache: CacheConfig{Disabled: true}, Protocols: testProtocols}
			v, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
			resp := idp.active(now)
			if tt.resp != nil {
				tt.resp(resp)
			}
			token := cmp(tt.token, idp.issue(resp))
			before := idp.introspections.Load()
			id, err := v.Validate(context.Background(), Request{Token: token, Protocol: cmp(tt.proto, "imap")})
			if asked := idp.introspections.Load() - before; asked != map[bool]int64{false: 1, true: 0}[tt.noAsk] {
				t.Errorf("introspection requests = %d", asked)
			}
			e := checkErr(t, err, tt.kind, tt.reason)
			if e != nil {
				if e.Scope != tt.scope {
					t.Errorf("Scope = %q, want %q", e.Scope, tt.scope)
				}
				if want := idp.URL() + "/.well-known/openid-configuration"; e.Discovery != want {
					t.Errorf("Discovery = %q, want %q", e.Discovery, want)
				}
				if strings.Contains(e.Error(), token) || strings.Contains(e.Error(), idp.secret) {
					t.Errorf("error %q contains the token or the secret", e)
				}
				return
			}
			if want := cmp(tt.user, "alice@example.com"); id.User != want {
				t.Errorf("User = %q, want %q", id.User, want)
			}
			if id.Issuer != idp.URL() || id.Subject != "248289761001" || !slices.Contains(id.Scopes, "email") {
				t.Errorf("Identity = %+v", id)
			}
			if exp, ok := resp["exp"].(int64); ok && !id.Expiry.Equal(time.Unix(exp, 0)) || tt.expires != id.Expiry.IsZero() {
				t.Errorf("Expiry = %v, response exp %v", id.Expiry, resp["exp"])
			}
			if cnf, ok := resp["cnf"].(members); ok && id.CertThumbprint != cnf["x5t#S256"] {
				t.Errorf("CertThumbprint = %q", id.CertThumbprint)
			}
			if cid, _ := resp["client_id"].(string); cid != "" && id.ClientID != cid {
				t.Errorf("ClientID = %q, want %q", id.ClientID, cid)
			}
		})
	}
}

func TestIntrospectionEndpointDiscovery(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	ic := idp.introspectionIssuer(t)
	v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}, Cache: CacheConfig{Disabled: true}}, WithHTTPClient(idp.srv.Client()))
	validate := func() error {
		_, err := v.Validate(context.Background(), Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"})
		return err
	}

	idp.mu.Lock()
	idp.metadata = map[string]any{"issuer": idp.URL()}
	idp.mu.Unlock()
	checkErr(t, validate(), ErrTemporary, "has no introspection_endpoint")
	checkErr(t, validate(), ErrTemporary, "retrying later")
	if got := idp.discovery.Load(); got != 1 {
		t.Fatalf("discovery requests during backoff = %d, want 1", got)
	}

	clk.Add(backoffMin)
	idp.mu.Lock()
	idp.metadata = map[string]any{"issuer": idp.URL() + "/other", "introspection_endpoint": idp.URL() + "/introspect"}
	idp.mu.Unlock()
	checkErr(t, validate(), ErrTemporary, "names issuer")

	clk.Add(2 * backoffMin)
	idp.mu.Lock()
	idp.metadata = map[string]any{"issuer": idp.URL(), "introspection_endpoint": "http://idp.example.com/introspect"}
	idp.mu.Unlock()
	checkErr(t, validate(), ErrTemporary, "only allowed for loopback")

	clk.Add(4 * backoffMin)
	idp.mu.Lock()
	idp.metadata = nil
	idp.mu.Unlock()
	for range 3 {
		if err := validate(); err != nil {
			t.Fatal(err)
		}
	}
	if d, i := idp.discovery.Load(), idp.introspections.Load(); d != 4 || i != 3 {
		t.Errorf("discovery, introspection requests = %d, %d; want 4, 3", d, i)
	}
}

func TestIntrospectionConfiguredEndpoint(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	ic := idp.introspectionIssuer(t)
	ic.IntrospectionEndpoint = idp.URL() + "/introspect"
	idp.setHandle(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/.well-known/openid-configuration" {
			http.Error(w, "no metadata here", http.StatusNotFound)
			return true
		}
		return false
	})
	v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}}, WithHTTPClient(idp.srv.Client()))
	if _, err := v.Validate(context.Background(), Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"}); err != nil {
		t.Fatal(err)
	}
	if idp.discovery.Load() != 0 {
		t.Errorf("discovery requests = %d, want 0", idp.discovery.Load())
	}
}

func TestClientSecretFile(t *testing.T) {
	idp := newOpaqueIdP(t)
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"0400", write("ro", "secret", 0o400), ""},
		{"group readable", write("group", "secret", 0o640), "chmod 600"},
		{"world readable", write("world", "secret", 0o604), "chmod 600"},
		{"empty", write("empty", " \n", 0o600), "is empty"},
		{"missing", filepath.Join(dir, "nonexistent"), "no such file"},
		{"directory", dir, "not a regular file"},
		{"too large", write("large", strings.Repeat("x", maxSecretFileSize+1), 0o600), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic := idp.introspectionIssuer(t)
			ic.ClientSecretFile = tc.file
			_, err := New(context.Background(), Config{Issuers: []IssuerConfig{ic}})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "tokens.issuers[0].client_secret_file") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error naming the field and %q", err, tc.want)
			}
		})
	}
	if s := fmt.Sprint(clientSecret("hunter2")); s != "[redacted]" {
		t.Errorf("clientSecret prints as %q", s)
	}
}

// 200 concurrent validations of one opaque token cost the IdP one introspection request.
func TestIntrospectionCoalesced(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	idp.setHandle(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/introspect" {
			once.Do(func() { close(entered) })
			<-release
		}
		return false
	})
	ic := idp.introspectionIssuer(t)
	ic.IntrospectionEndpoint = idp.URL() + "/introspect"
	v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}}, WithHTTPClient(idp.srv.Client()))
	token := idp.issue(idp.active(clk.Now()))
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			id, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
			if err == nil && id.User != "alice@example.com" {
				err = fmt.Errorf("User = %q", id.User)
			}
			errs <- err
		})
	}
	<-entered
	time.Sleep(20 * time.Millisecond) // let most callers join the flight; stragglers hit the cache
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := idp.introspections.Load(); got != 1 {
		t.Errorf("introspection requests = %d, want 1", got)
	}
}

// Validations reuse a cached introspection answer until the token's exp, even while the IdP is
// down; tokens not seen before are then a temporary failure.
func TestIntrospectionCache(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	ic := idp.introspectionIssuer(t)
	v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}}, WithHTTPClient(idp.srv.Client()))
	resp := idp.active(clk.Now())
	resp["exp"] = clk.Now().Add(2 * time.Minute).Unix()
	token := idp.issue(resp)
	validate := func(token string) error {
		_, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
		return err
	}
	if err := validate(token); err != nil {
		t.Fatal(err)
	}
	idp.setHandle(respond(http.StatusServiceUnavailable, "text/plain", "down"))
	clk.Add(119 * time.Second)
	if err := validate(token); err != nil {
		t.Fatalf("cached while IdP down: %v", err)
	}
	checkErr(t, validate(idp.issue(idp.active(clk.Now()))), ErrTemporary, "503")
	if got := idp.introspections.Load(); got != 2 {
		t.Fatalf("introspection requests = %d, want 2", got)
	}
	clk.Add(time.Second) // at exp: no longer cached
	checkErr(t, validate(token), ErrTemporary, "503")

	// Keys of the cache are hashes: no key holds the token.
	for _, k := range v.cache.Keys() {
		if strings.Contains(string(k.sum[:]), token) {
			t.Error("cache key holds the token")
		}
	}

	// Inactive answers are cached briefly.
	idp.setHandle(nil)
	inactive := idp.issue(nil)
	for range 2 {
		checkErr(t, validate(inactive), ErrInvalidToken, "not active")
	}
	if got := idp.introspections.Load(); got != 4 {
		t.Errorf("introspection requests = %d, want 4 (inactive answer cached)", got)
	}
}

func TestIntrospectionSlowIdP(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	idp.setHandle(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		return true
	})
	ic := idp.introspectionIssuer(t)
	ic.IntrospectionEndpoint = idp.URL() + "/introspect"

	t.Run("issuer timeout", func(t *testing.T) {
		ic := ic
		ic.Timeout = config.Duration(50 * time.Millisecond)
		v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}}, WithHTTPClient(idp.srv.Client()))
		_, err := v.Validate(context.Background(), Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"})
		checkErr(t, err, ErrTemporary, "deadline exceeded")
	})
	t.Run("caller deadline", func(t *testing.T) {
		v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}}, WithHTTPClient(idp.srv.Client()))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err := v.Validate(ctx, Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"})
		checkErr(t, err, ErrTemporary, "abandoned")
	})
	t.Run("unreachable", func(t *testing.T) {
		ic := ic
		ic.IntrospectionEndpoint = "http://127.0.0.1:1/introspect"
		v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}})
		_, err := v.Validate(context.Background(), Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"})
		checkErr(t, err, ErrTemporary, "refused")
	})
}

// No more than max_concurrent_requests requests are in flight towards one IdP; the others wait
// for a slot.
func TestMaxConcurrentRequests(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	var mu sync.Mutex
	inFlight, peak := 0, 0
	full, release := make(chan struct{}), make(chan struct{})
	var fullOnce sync.Once // after the release, later requests reach two in flight again
	idp.setHandle(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		if inFlight == 2 {
			fullOnce.Do(func() { close(full) })
		}
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		return false
	})
	ic := idp.introspectionIssuer(t)
	ic.IntrospectionEndpoint = idp.URL() + "/introspect"
	ic.MaxConcurrentRequests = 2
	v, _ := newValidator(t, clk, Config{Issuers: []IssuerConfig{ic}}, WithHTTPClient(idp.srv.Client()))
	var wg sync.WaitGroup
	for range 6 {
		token := idp.issue(idp.active(clk.Now()))
		wg.Go(func() {
			if _, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"}); err != nil {
				t.Error(err)
			}
		})
	}
	<-full
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if peak != 2 || idp.introspections.Load() != 6 {
		t.Errorf("peak in flight = %d, requests = %d; want 2, 6", peak, idp.introspections.Load())
	}
}

func TestRequestSlotWaitBounded(t *testing.T) {
	c, err := newIDPClient(nil, IssuerConfig{MaxConcurrentRequests: 1, Timeout: config.Duration(20 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	c.sem <- struct{}{} // the only slot is taken
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
	if _, err := c.do(context.Background(), c.client, req); err == nil || !strings.Contains(err.Error(), "no free request slot") {
		t.Errorf("do = %v, want no free request slot", err)
	}
}
