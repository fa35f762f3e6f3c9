package demoissuer_test

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/saslgate/saslgate/internal/demoissuer"
)

var users = map[string]string{"alice": "wonderland", "bob@example.org": "builder"}

// start serves a new Issuer at http://127.0.0.1:port+path.
func start(t *testing.T, path string, opts ...demoissuer.Option) *demoissuer.Issuer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	iss, err := demoissuer.New("http://"+srv.Listener.Addr().String()+path, users, opts...)
	if err != nil {
		srv.Listener.Close()
		t.Fatal(err)
	}
	srv.Config.Handler = iss.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return iss
}

func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s %q", u, resp.Status, resp.Header.Get("Content-Type"))
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return m
}

// parse verifies tok against the issuer's key and returns its header and claims.
func parse(t *testing.T, iss *demoissuer.Issuer, tok string) (jose.Header, map[string]any) {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(iss.Key().Public())
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Protected, claims
}

func TestDiscoveryAndJWKS(t *testing.T) {
	iss := start(t, "")
	doc := getJSON(t, iss.URL()+"/.well-known/openid-configuration")
	want := map[string]any{
		"issuer":                                iss.URL(),
		"jwks_uri":                              iss.URL() + "/jwks",
		"token_endpoint":                        iss.URL() + "/token",
		"grant_types_supported":                 []any{"password"},
		"response_types_supported":              []any{"token"},
		"subject_types_supported":               []any{"public"},
		"id_token_signing_alg_values_supported": []any{"RS256"},
		"scopes_supported":                      []any{"openid", "email"},
	}
	if !reflect.DeepEqual(doc, want) {
		t.Errorf("discovery:\n got %v\nwant %v", doc, want)
	}

	keys, _ := getJSON(t, iss.URL()+"/jwks")["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("jwks: %d keys, want 1", len(keys))
	}
	k := keys[0].(map[string]any)
	pub := iss.Key().Public().(*rsa.PublicKey)
	n := base64.RawURLEncoding.EncodeToString(pub.N.Bytes())
	e := base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	// RFC 7638 §3.1: SHA-256 over the required members in lexicographic order.
	sum := sha256.Sum256(fmt.Appendf(nil, `{"e":%q,"kty":"RSA","n":%q}`, e, n))
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	wantKey := map[string]any{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e}
	if !reflect.DeepEqual(k, wantKey) {
		t.Errorf("jwk:\n got %v\nwant %v", k, wantKey)
	}
	if iss.KeyID() != kid {
		t.Errorf("KeyID() = %q, want %q", iss.KeyID(), kid)
	}
	if bits := pub.N.BitLen(); bits != 2048 {
		t.Errorf("key has %d bits, want 2048", bits)
	}
}

func TestGoOIDCAcceptsTokens(t *testing.T) {
	for _, tc := range []struct{ alg, path string }{{"RS256", ""}, {"RS256", "/realms/demo"}, {"ES256", ""}} {
		path := tc.path
		t.Run(tc.alg+"/path="+path, func(t *testing.T) {
			iss := start(t, path, demoissuer.WithAlgorithm(tc.alg))
			if iss.Algorithm() != tc.alg {
				t.Fatalf("Algorithm() = %q, want %q", iss.Algorithm(), tc.alg)
			}
			ctx := context.Background()
			provider, err := oidc.NewProvider(ctx, iss.URL())
			if err != nil {
				t.Fatal(err)
			}
			verifier := provider.Verifier(&oidc.Config{SkipClientIDCheck: true})

			minted, err := iss.Mint(demoissuer.Claims{Subject: "alice", Email: "alice@example.com", Scope: "email"})
			if err != nil {
				t.Fatal(err)
			}
			granted := passwordGrant(t, iss, url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}})
			for name, tok := range map[string]string{"minted": minted, "granted": granted.AccessToken} {
				if jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(tc.alg)}); err != nil {
					t.Fatalf("%s: not signed %s: %v", name, tc.alg, err)
				} else if h := jws.Signatures[0].Protected; h.KeyID != iss.KeyID() {
					t.Errorf("%s: kid %q, want %q", name, h.KeyID, iss.KeyID())
				}
				idt, err := verifier.Verify(ctx, tok)
				if err != nil {
					t.Fatalf("%s: Verify: %v", name, err)
				}
				var c struct{ Email string }
				if err := idt.Claims(&c); err != nil {
					t.Fatal(err)
				}
				if idt.Issuer != iss.URL() || idt.Subject != "alice" || c.Email != "alice@example.com" ||
					!reflect.DeepEqual(idt.Audience, []string{"saslgate"}) {
					t.Errorf("%s: iss=%q sub=%q aud=%v email=%q", name, idt.Issuer, idt.Subject, idt.Audience, c.Email)
				}
			}

			// A key the issuer does not publish must be refused.
			other := start(t, path, demoissuer.WithAlgorithm(tc.alg))
			forged, err := other.Mint(demoissuer.Claims{Subject: "alice", Extra: map[string]any{"iss": iss.URL()}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := verifier.Verify(ctx, forged); err == nil {
				t.Error("Verify accepted a token signed by another key")
			}
		})
	}
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

func passwordGrant(t *testing.T, iss *demoissuer.Issuer, form url.Values) tokenResponse {
	t.Helper()
	resp, err := http.PostForm(iss.URL()+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /token: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestTokenEndpoint is a transcript of token requests (C:) and the status
// and error code the issuer answers (S:), RFC 6749 §4.3 and §5.2.
func TestTokenEndpoint(t *testing.T) {
	iss := start(t, "")
	tests := []struct {
		name   string
		method string // POST when empty
		ctype  string // form content type when empty
		body   string // C:
		status int    // S:
		error  string // S: error member, "" on success
	}{
		{"success", "", "", "grant_type=password&username=alice&password=wonderland", 200, ""},
		{"wrong password", "", "", "grant_type=password&username=alice&password=wonderlant", 400, "invalid_grant"},
		{"password prefix", "", "", "grant_type=password&username=alice&password=wonder", 400, "invalid_grant"},
		{"empty password", "", "", "grant_type=password&username=alice&password=", 400, "invalid_grant"},
		{"unknown user", "", "", "grant_type=password&username=mallory&password=wonderland", 400, "invalid_grant"},
		{"username case", "", "", "grant_type=password&username=Alice&password=wonderland", 400, "invalid_grant"},
		{"client credentials", "", "", "grant_type=client_credentials&client_id=x", 400, "unsupported_grant_type"},
		{"authorization code", "", "", "grant_type=authorization_code&code=x", 400, "unsupported_grant_type"},
		{"no grant type", "", "", "username=alice&password=wonderland", 400, "invalid_request"},
		{"no password", "", "", "grant_type=password&username=alice", 400, "invalid_request"},
		{"no username", "", "", "grant_type=password&password=wonderland", 400, "invalid_request"},
		{"repeated password", "", "", "grant_type=password&username=alice&password=x&password=wonderland", 400, "invalid_request"},
		{"json body", "", "application/json", `{"grant_type":"password"}`, 400, "invalid_request"},
		{"GET", http.MethodGet, "", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, ctype := cmp(tt.method, http.MethodPost), cmp(tt.ctype, "application/x-www-form-urlencoded")
			req, _ := http.NewRequest(method, iss.URL()+"/token", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", ctype)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("C: %s /token %s\nS: %d %s", method, tt.body, resp.StatusCode, body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 405 {
				return
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store (RFC 6749 §5.1)", cc)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			if got, _ := m["error"].(string); got != tt.error {
				t.Errorf("error %q, want %q", got, tt.error)
			}
			if tt.error == "" && (m["token_type"] != "Bearer" || m["access_token"] == "") {
				t.Errorf("success body %s", body)
			}
		})
	}
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestTokenEndpointClaims(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	iss := start(t, "", demoissuer.WithNow(func() time.Time { return now }),
		demoissuer.WithDomain("mail.test"), demoissuer.WithAudience("imap-gw"), demoissuer.WithTTL(10*time.Minute))
	tests := []struct {
		name string
		form url.Values
		want map[string]any // claims other than iss, iat, jti
	}{
		{"defaults", url.Values{"username": {"alice"}, "password": {"wonderland"}}, map[string]any{
			"sub": "alice", "email": "alice@mail.test", "aud": "imap-gw", "scope": "openid email",
			"client_id": "saslgate-demo", "exp": float64(now.Unix() + 600),
		}},
		{"scope and client", url.Values{"username": {"bob@example.org"}, "password": {"builder"},
			"scope": {"email imap"}, "client_id": {"thunderbird"}}, map[string]any{
			"sub": "bob@example.org", "email": "bob@example.org", "aud": "imap-gw", "scope": "email imap",
			"client_id": "thunderbird", "exp": float64(now.Unix() + 600),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.form.Set("grant_type", "password")
			tr := passwordGrant(t, iss, tt.form)
			if tr.TokenType != "Bearer" || tr.ExpiresIn != 600 || tr.Scope != tt.want["scope"] {
				t.Errorf("response %+v", tr)
			}
			hdr, claims := parse(t, iss, tr.AccessToken)
			checkHeader(t, iss, hdr)
			if claims["iss"] != iss.URL() || claims["iat"] != float64(now.Unix()) || claims["jti"] == "" {
				t.Errorf("iss/iat/jti: %v", claims)
			}
			for _, k := range []string{"iss", "iat", "jti"} {
				delete(claims, k)
			}
			if !reflect.DeepEqual(claims, tt.want) {
				t.Errorf("claims:\n got %v\nwant %v", claims, tt.want)
			}
		})
	}
}

func checkHeader(t *testing.T, iss *demoissuer.Issuer, h jose.Header) {
	t.Helper()
	if h.Algorithm != "RS256" || h.KeyID != iss.KeyID() || h.ExtraHeaders["typ"] != "at+jwt" {
		t.Errorf("header alg=%q kid=%q typ=%v, want RS256 %q at+jwt", h.Algorithm, h.KeyID, h.ExtraHeaders["typ"], iss.KeyID())
	}
}

func TestMint(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	iss := start(t, "", demoissuer.WithNow(func() time.Time { return now }))
	tests := []struct {
		name   string
		claims demoissuer.Claims
		want   map[string]any // claims other than iss, iat, jti
	}{
		{"minimal", demoissuer.Claims{Subject: "s"}, map[string]any{
			"sub": "s", "aud": "saslgate", "client_id": "saslgate-demo", "exp": float64(now.Unix() + 3600),
		}},
		{"ttl audience scope", demoissuer.Claims{Subject: "s", Email: "s@x", Audience: []string{"a", "b"},
			Scope: "email", ClientID: "c", TTL: time.Minute}, map[string]any{
			"sub": "s", "email": "s@x", "aud": []any{"a", "b"}, "scope": "email", "client_id": "c",
			"exp": float64(now.Unix() + 60),
		}},
		{"expired", demoissuer.Claims{Subject: "s", Audience: []string{"one"}, TTL: -time.Second}, map[string]any{
			"sub": "s", "aud": "one", "client_id": "saslgate-demo", "exp": float64(now.Unix() - 1),
		}},
		{"extra overrides and removes", demoissuer.Claims{Subject: "s", Email: "s@x", Extra: map[string]any{
			"email":     "evil@x\r\nA1 LOGOUT",
			"exp":       nil,
			"client_id": nil,
			"aud":       []string{"x"},
			"nbf":       now.Unix() + 5,
			"groups":    json.RawMessage("null"),
			"cnf":       map[string]string{"x5t#S256": "abc"},
		}}, map[string]any{
			"sub": "s", "email": "evil@x\r\nA1 LOGOUT", "aud": []any{"x"}, "nbf": float64(now.Unix() + 5),
			"groups": nil, "cnf": map[string]any{"x5t#S256": "abc"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := iss.Mint(tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			hdr, claims := parse(t, iss, tok)
			checkHeader(t, iss, hdr)
			if claims["iss"] != iss.URL() || claims["iat"] != float64(now.Unix()) || claims["jti"] == "" {
				t.Errorf("iss/iat/jti: %v", claims)
			}
			for _, k := range []string{"iss", "iat", "jti"} {
				delete(claims, k)
			}
			if !reflect.DeepEqual(claims, tt.want) {
				t.Errorf("claims:\n got %v\nwant %v", claims, tt.want)
			}
		})
	}

	t.Run("extra overrides iss and jti", func(t *testing.T) {
		tok, err := iss.Mint(demoissuer.Claims{Extra: map[string]any{"iss": "https://evil", "jti": "fixed"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, c := parse(t, iss, tok); c["iss"] != "https://evil" || c["jti"] != "fixed" {
			t.Errorf("claims %v", c)
		}
	})

	t.Run("unique jti, concurrent", func(t *testing.T) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		seen := map[any]bool{}
		for range 8 {
			wg.Go(func() {
				tok, err := iss.Mint(demoissuer.Claims{Subject: "s"})
				if err != nil {
					t.Error(err)
					return
				}
				_, c := parse(t, iss, tok)
				mu.Lock()
				defer mu.Unlock()
				if seen[c["jti"]] {
					t.Errorf("jti %v repeated", c["jti"])
				}
				seen[c["jti"]] = true
			})
		}
		wg.Wait()
	})

	t.Run("unmarshalable extra", func(t *testing.T) {
		if _, err := iss.Mint(demoissuer.Claims{Extra: map[string]any{"x": make(chan int)}}); err == nil {
			t.Error("Mint accepted a claim JSON cannot encode")
		}
	})
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		url  string
		opts []demoissuer.Option
		want string // substring of the error
	}{
		{"relative", "/issuer", nil, "absolute"},
		{"scheme", "ftp://host", nil, "absolute"},
		{"query", "http://host/?a=b", nil, "query"},
		{"fragment", "http://host/#f", nil, "query"},
		{"userinfo", "http://u:p@host", nil, "userinfo"},
		{"unparsable", "http://[::1", nil, "issuer URL"},
		{"domain", "http://host", []demoissuer.Option{demoissuer.WithDomain("")}, "domain"},
		{"audience", "http://host", []demoissuer.Option{demoissuer.WithAudience("")}, "audience"},
		{"ttl", "http://host", []demoissuer.Option{demoissuer.WithTTL(0)}, "ttl"},
		{"now", "http://host", []demoissuer.Option{demoissuer.WithNow(nil)}, "now"},
		{"algorithm", "http://host", []demoissuer.Option{demoissuer.WithAlgorithm("HS256")}, "algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := demoissuer.New(tt.url, nil, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "demoissuer: ") {
				t.Errorf("New(%q) = %v, want error mentioning %q", tt.url, err, tt.want)
			}
		})
	}
}

func TestHandlerRoutes(t *testing.T) {
	iss := start(t, "/realms/demo")
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/realms/demo/.well-known/openid-configuration", 200},
		{http.MethodHead, "/realms/demo/jwks", 200},
		{http.MethodGet, "/.well-known/openid-configuration", 404},
		{http.MethodGet, "/realms/demo/authorize", 404},
		{http.MethodPost, "/realms/demo/jwks", 405},
		{http.MethodDelete, "/realms/demo/token", 405},
	}
	base, _ := url.Parse(iss.URL())
	for _, tt := range tests {
		u := base.Scheme + "://" + base.Host + tt.path
		req, _ := http.NewRequest(tt.method, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
		}
	}
}
