package introspect

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/saslgate/saslgate/internal/config"
)

func baseConfig(idp *testIdP) Config {
	return Config{
		Issuers: []IssuerConfig{{
			Issuer:       idp.URL(),
			Audience:     []string{"saslgate"},
			RequireATJWT: true,
			Username:     UsernameConfig{Lowercase: true},
			Scopes:       map[string][]string{"imap": {"email"}, "smtp": {"email", "smtp"}},
		}},
		Cache:     CacheConfig{Disabled: true},
		Protocols: testProtocols,
	}
}

// testProtocols are the protocol names cmd/saslgate sets in Config.Protocols.
var testProtocols = []string{"imap", "smtp"}

// newValidator returns a Validator on clk whose uncached validations are counted in calls.
func newValidator(t testing.TB, clk *clock, cfg Config, opts ...Option) (*Validator, *atomic.Int64) {
	t.Helper()
	v, err := New(context.Background(), cfg, append([]Option{WithNow(clk.Now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	calls := new(atomic.Int64)
	v.testHookValidate = func() { calls.Add(1) }
	return v, calls
}

// checkErr fails unless err is an *Error of kind want (nil: no error) whose text has reason.
func checkErr(t *testing.T, err, want error, reason string) *Error {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		return nil
	}
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, want) {
		t.Fatalf("Validate error = %v, want %v", err, want)
	}
	if !strings.Contains(e.Error(), reason) {
		t.Errorf("error %q does not mention %q", e.Error(), reason)
	}
	return e
}

func TestValidateJWT(t *testing.T) {
	idp := newTestIdP(t)
	other := newTestIdP(t)
	clk := newClock()
	now := clk.Now()
	rogue, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rogueEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&idp.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	discovery := idp.URL() + "/.well-known/openid-configuration"

	type claims = map[string]any
	tests := []struct {
		name   string
		spec   tokenSpec
		claims func(claims)                      // edits the valid claim set
		token  func(c claims) string             // builds the token instead of spec
		cfg    func(ic *IssuerConfig, c *Config) // edits the config
		proto  string                            // default "imap"
		kind   error                             // nil: valid
		reason string
		user   string // expected Identity.User when valid (default alice@example.com)
		scope  string // expected Error.Scope
	}{
		{name: "valid RS256"},
		{name: "valid ES256", spec: tokenSpec{alg: jose.ES256}},
		{name: "PS256 with the key published for RS256", spec: tokenSpec{alg: jose.PS256}, kind: ErrInvalidToken, reason: "no signing key"},
		{name: "valid without kid", spec: tokenSpec{kid: "-"}},
		{name: "expired", claims: func(c claims) { c["exp"] = now.Add(-time.Minute).Unix() }, kind: ErrInvalidToken, reason: "expired"},
		{name: "expired within leeway", claims: func(c claims) { c["exp"] = now.Add(-20 * time.Second).Unix() }},
		{name: "expired beyond configured leeway",
			claims: func(c claims) { c["exp"] = now.Add(-10 * time.Second).Unix() },
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Leeway = config.Duration(5 * time.Second) },
			kind:   ErrInvalidToken, reason: "expired"},
		{name: "exp missing", claims: func(c claims) { delete(c, "exp") }, kind: ErrInvalidToken, reason: "expired"},
		{name: "nbf in future", claims: func(c claims) { c["nbf"] = now.Add(time.Minute).Unix() }, kind: ErrInvalidToken, reason: "not yet valid"},
		{name: "nbf absurd", claims: func(c claims) { c["nbf"] = 1e300 }, kind: ErrInvalidToken, reason: "not yet valid"},
		{name: "nbf within leeway", claims: func(c claims) { c["nbf"] = now.Add(20 * time.Second).Unix() }},
		{name: "unknown iss", claims: func(c claims) { c["iss"] = "https://idp.example.net" }, kind: ErrInvalidToken, reason: "unknown issuer"},
		{name: "iss with trailing slash", claims: func(c claims) { c["iss"] = idp.URL() + "/" }, kind: ErrInvalidToken, reason: "unknown issuer"},
		{name: "wrong iss: another configured issuer, signed by this one",
			claims: func(c claims) { c["iss"] = other.URL() },
			cfg: func(_ *IssuerConfig, c *Config) {
				c.Issuers = append(c.Issuers, IssuerConfig{Issuer: other.URL(), Audience: []string{"saslgate"}})
			},
			kind: ErrInvalidToken, reason: "signature does not verify"},
		{name: "wrong aud", claims: func(c claims) { c["aud"] = "webmail" }, kind: ErrInvalidToken, reason: "audience"},
		{name: "aud missing", claims: func(c claims) { delete(c, "aud") }, kind: ErrInvalidToken, reason: "audience"},
		{name: "aud list", claims: func(c claims) { c["aud"] = []string{"webmail", "saslgate"} }},
		{name: "aud check skipped",
			claims: func(c claims) { c["aud"] = "webmail" },
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Audience, ic.InsecureSkipAudienceCheck = nil, true }},
		{name: "unknown kid", spec: tokenSpec{key: rogue, kid: "rogue-1"}, kind: ErrInvalidToken, reason: "no signing key"},
		{name: "known kid, other key", spec: tokenSpec{key: rogue, kid: kidRSA}, kind: ErrInvalidToken, reason: "signature does not verify"},
		{name: "ES256 with other key", spec: tokenSpec{alg: jose.ES256, key: rogueEC, kid: kidEC}, kind: ErrInvalidToken, reason: "signature does not verify"},
		{name: "kid of the symmetric key", spec: tokenSpec{key: rogue, kid: "oct-1"}, kind: ErrInvalidToken, reason: "no signing key"},
		{name: "kid of the encryption key", spec: tokenSpec{key: idp.rsa, kid: "enc-1"}, kind: ErrInvalidToken, reason: "no signing key"},
		{name: "tampered payload",
			token: func(c claims) string {
				good := strings.Split(idp.sign(t, tokenSpec{}, c), ".")
				c["email"] = "bob@example.com"
				forged := strings.Split(idp.sign(t, tokenSpec{key: rogue}, c), ".")
				return good[0] + "." + forged[1] + "." + good[2]
			},
			kind: ErrInvalidToken, reason: "signature does not verify"},
		{name: "alg none",
			token: func(c claims) string { return unsigned(map[string]any{"alg": "none", "typ": "at+jwt"}, c) },
			kind:  ErrInvalidToken, reason: `algorithm "none" not allowed`},
		{name: "alg none, kid set",
			token: func(c claims) string { return unsigned(map[string]any{"alg": "none", "kid": kidRSA}, c) },
			kind:  ErrInvalidToken, reason: "not allowed"},
		{name: "HS256 keyed with the IdP's RSA public key (PEM)",
			spec: tokenSpec{alg: jose.HS256, key: pubPEM, kid: kidRSA},
			kind: ErrInvalidToken, reason: `algorithm "HS256" not allowed`},
		{name: "HS256 keyed with the IdP's RSA public key (DER)",
			spec: tokenSpec{alg: jose.HS256, key: pubDER, kid: kidRSA},
			kind: ErrInvalidToken, reason: "not allowed"},
		{name: "alg not configured for issuer",
			cfg:  func(ic *IssuerConfig, _ *Config) { ic.Algorithms = []string{"ES256"} },
			kind: ErrInvalidToken, reason: "not allowed"},
		{name: "alg allowed for another issuer only",
			cfg: func(ic *IssuerConfig, c *Config) {
				ic.Algorithms = []string{"ES256"}
				c.Issuers = append(c.Issuers, IssuerConfig{Issuer: other.URL(), Audience: []string{"x"}, Algorithms: []string{"RS256"}})
			},
			kind: ErrInvalidToken, reason: "not allowed for this issuer"},
		{name: "typ required, missing", spec: tokenSpec{typ: "-"}, kind: ErrInvalidToken, reason: "typ"},
		{name: "typ required, JWT", spec: tokenSpec{typ: "JWT"}, kind: ErrInvalidToken, reason: "typ"},
		{name: "typ application/AT+JWT", spec: tokenSpec{typ: "application/AT+JWT"}},
		{name: "typ AT+JWT", spec: tokenSpec{typ: "AT+JWT"}},
		{name: "typ not required, missing", spec: tokenSpec{typ: "-"},
			cfg: func(ic *IssuerConfig, _ *Config) { ic.RequireATJWT = false }},
		{name: "RFC 9068 claim jti missing", claims: func(c claims) { delete(c, "jti") }, kind: ErrInvalidToken, reason: "jti"},
		{name: "RFC 9068 claims not required",
			claims: func(c claims) { delete(c, "jti"); delete(c, "client_id"); delete(c, "iat") },
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.RequireATJWT = false }},
		{name: "missing scope", claims: func(c claims) { c["scope"] = "openid profile" },
			kind: ErrInsufficientScope, reason: `"email"`, scope: "email"},
		{name: "missing one of two scopes", proto: "smtp",
			kind: ErrInsufficientScope, reason: `"smtp"`, scope: "email smtp"},
		{name: "all scopes for smtp", proto: "smtp", claims: func(c claims) { c["scope"] = "smtp email" }},
		{name: "scp array", claims: func(c claims) { delete(c, "scope"); c["scp"] = []string{"openid", "email"} }},
		{name: "scp string", claims: func(c claims) { delete(c, "scope"); c["scp"] = "email openid" }},
		{name: "scope is not a string", claims: func(c claims) { c["scope"] = 7 }, kind: ErrInvalidToken, reason: "malformed claims"},
		{name: "unknown protocol", proto: "pop3", kind: ErrInvalidToken, reason: "unknown protocol"},
		{name: "username claim missing", claims: func(c claims) { delete(c, "email") }, kind: ErrInvalidToken, reason: "missing"},
		{name: "username claim not a string", claims: func(c claims) { c["email"] = []string{"alice@example.com"} }, kind: ErrInvalidToken, reason: "not a string"},
		{name: "username claim null", claims: func(c claims) { c["email"] = nil }, kind: ErrInvalidToken, reason: "empty"},
		{name: "username with CRLF", claims: func(c claims) { c["email"] = "alice\r\nA1 LOGOUT@example.com" }, kind: ErrInvalidToken, reason: "control byte 0x0d"},
		{name: "username with NUL", claims: func(c claims) { c["email"] = "alice\x00@example.com" }, kind: ErrInvalidToken, reason: "control byte 0x00"},
		{name: "username with quote", claims: func(c claims) { c["email"] = `"alice"@example.com` }, kind: ErrInvalidToken, reason: `'"'`},
		{name: "username with space", claims: func(c claims) { c["email"] = "alice smith@example.com" }, kind: ErrInvalidToken, reason: "' '"},
		{name: "username with comma", claims: func(c claims) { c["email"] = "smith,alice@example.com" }, user: "smith,alice@example.com"},
		{name: "username claim sub, appended domain",
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.UsernameClaim, ic.Username = "sub", UsernameConfig{AppendDomain: "mail.example.com"}
			},
			user: "248289761001@mail.example.com"},
		{name: "no lowercase", cfg: func(ic *IssuerConfig, _ *Config) { ic.Username.Lowercase = false }, user: "Alice@Example.com"},
		{name: "strip domain", cfg: func(ic *IssuerConfig, _ *Config) { ic.Username.StripDomain = true }, user: "alice"},
		{name: "replace domain",
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.Username.StripDomain, ic.Username.AppendDomain = true, "mail.example.com"
			},
			user: "alice@mail.example.com"},
		{name: "allowed domain",
			cfg:  func(ic *IssuerConfig, _ *Config) { ic.Username.AllowedDomains = []string{"example.org", "EXAMPLE.com"} },
			user: "alice@example.com"},
		{name: "domain not allowed",
			cfg:  func(ic *IssuerConfig, _ *Config) { ic.Username.AllowedDomains = []string{"example.org"} },
			kind: ErrInvalidToken, reason: "domain is not allowed"},
		{name: "cnf thumbprint", claims: func(c claims) {
			c["cnf"] = map[string]string{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}
		}},
		{name: "client allowed", cfg: func(ic *IssuerConfig, _ *Config) { ic.AllowedClientIDs = []string{"thunderbird"} }},
		{name: "client not allowed", cfg: func(ic *IssuerConfig, _ *Config) { ic.AllowedClientIDs = []string{"mutt"} },
			kind: ErrInvalidToken, reason: `client "thunderbird" not allowed`},
		{name: "client from azp",
			claims: func(c claims) { delete(c, "client_id"); c["azp"] = "mutt" },
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.RequireATJWT, ic.AllowedClientIDs = false, []string{"mutt"}
			}},
		{name: "no client, allow-list set",
			claims: func(c claims) { delete(c, "client_id") },
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.RequireATJWT, ic.AllowedClientIDs = false, []string{"thunderbird"}
			},
			kind: ErrInvalidToken, reason: "not allowed"},
		{name: "DPoP-bound", claims: func(c claims) { c["cnf"] = map[string]string{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"} },
			kind: ErrInvalidToken, reason: "DPoP"},
		{name: "huge JOSE header", token: func(c claims) string {
			return idp.sign(t, tokenSpec{key: idp.rsa, kid: strings.Repeat("k", maxHeaderSize)}, c)
		}, kind: ErrInvalidToken, reason: "JOSE header too large"},
		{name: "not a JWT", token: func(claims) string { return "not-a-jwt" }, kind: ErrInvalidToken, reason: "malformed"},
		{name: "JWS JSON serialization",
			token: func(c claims) string {
				signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: idp.rsa}, nil)
				jws, _ := signer.Sign([]byte(`{}`))
				return jws.FullSerialize()
			},
			kind: ErrInvalidToken, reason: "malformed"},
		{name: "claims not JSON",
			token: func(claims) string { return "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln" },
			kind:  ErrInvalidToken, reason: "malformed claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(idp)
			if tt.cfg != nil {
				tt.cfg(&cfg.Issuers[0], &cfg)
			}
			v, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
			c := idp.claims(now)
			if tt.claims != nil {
				tt.claims(c)
			}
			var token string
			if tt.token != nil {
				token = tt.token(c)
			} else {
				token = idp.sign(t, tt.spec, c)
			}
			proto := cmp(tt.proto, "imap")
			id, err := v.Validate(context.Background(), Request{Token: token, Protocol: proto})
			e := checkErr(t, err, tt.kind, tt.reason)
			if e != nil {
				if e.Scope != tt.scope {
					t.Errorf("Scope = %q, want %q", e.Scope, tt.scope)
				}
				if e.Discovery != discovery && len(cfg.Issuers) == 1 {
					t.Errorf("Discovery = %q, want %q", e.Discovery, discovery)
				}
				if strings.Contains(e.Error(), token) {
					t.Errorf("error contains the token")
				}
				return
			}
			if want := cmp(tt.user, "alice@example.com"); id.User != want {
				t.Errorf("User = %q, want %q", id.User, want)
			}
			if id.Issuer != idp.URL() || id.Subject != "248289761001" || !id.Expiry.Equal(time.Unix(c["exp"].(int64), 0)) {
				t.Errorf("Identity = %+v", id)
			}
			if cid, _ := c["client_id"].(string); cid != "" && id.ClientID != cid {
				t.Errorf("ClientID = %q, want %q", id.ClientID, cid)
			}
			if !slices.Contains(id.Scopes, "email") && proto == "imap" {
				t.Errorf("Scopes = %q", id.Scopes)
			}
			if cnf, ok := c["cnf"].(map[string]string); ok && id.CertThumbprint != cnf["x5t#S256"] {
				t.Errorf("CertThumbprint = %q", id.CertThumbprint)
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

func TestIdentityFields(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
	c := idp.claims(clk.Now())
	c["aud"] = []string{"saslgate", "webmail"}
	c["scope"] = "openid email"
	c["scp"] = []string{"imap"}
	id, err := v.Validate(context.Background(), Request{Token: idp.sign(t, tokenSpec{}, c), Protocol: "imap"})
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{
		User: "alice@example.com", Subject: "248289761001", Issuer: idp.URL(), ClientID: "thunderbird",
		Scopes: []string{"openid", "email", "imap"}, Audience: []string{"saslgate", "webmail"},
		Expiry: time.Unix(c["exp"].(int64), 0),
	}
	if id.User != want.User || id.Subject != want.Subject || id.Issuer != want.Issuer || id.ClientID != want.ClientID ||
		!slices.Equal(id.Scopes, want.Scopes) || !slices.Equal(id.Audience, want.Audience) || !id.Expiry.Equal(want.Expiry) {
		t.Errorf("Identity =\n %+v, want\n %+v", id, want)
	}
}

func TestIdPDownIsTemporaryAndRetried(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache.Disabled = false
	v, calls := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	token := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	req := Request{Token: token, Protocol: "imap"}

	idp.down.Store(true)
	_, err := v.Validate(context.Background(), req)
	e := checkErr(t, err, ErrTemporary, "503")
	if e.Discovery == "" {
		t.Error("temporary error without Discovery")
	}
	if got := idp.requests(); got != 1 {
		t.Fatalf("IdP requests = %d, want 1 (discovery)", got)
	}

	// Backing off: no request, still temporary, and nothing was cached.
	idp.down.Store(false)
	_, err = v.Validate(context.Background(), req)
	checkErr(t, err, ErrTemporary, "retrying later")
	if got := idp.requests(); got != 1 {
		t.Fatalf("IdP requests during backoff = %d, want 1", got)
	}
	if calls.Load() != 2 {
		t.Fatalf("validations = %d, want 2 (temporary failures are not cached)", calls.Load())
	}

	clk.Add(backoffMin)
	if _, err := v.Validate(context.Background(), req); err != nil {
		t.Fatalf("after backoff: %v", err)
	}
	if got := idp.requests(); got != 3 {
		t.Errorf("IdP requests = %d, want 3 (discovery twice, JWKS once)", got)
	}
}

func TestBackoffGrows(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := backoff(1000); got != backoffMax {
		t.Errorf("backoff(1000) = %v", got)
	}
}

func TestNewDoesNotContactIdP(t *testing.T) {
	idp := newTestIdP(t)
	token := idp.sign(t, tokenSpec{}, idp.claims(time.Now()))
	idp.srv.Close() // nothing listens any more
	v, err := New(context.Background(), baseConfig(idp))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
	checkErr(t, err, ErrTemporary, "unavailable")
}

func TestIdPTimeout(t *testing.T) {
	idp := newTestIdP(t)
	idp.hang = make(chan struct{})
	clk := newClock()
	token := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	client := idp.srv.Client()
	client.Timeout = 50 * time.Millisecond
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(client))
	_, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
	checkErr(t, err, ErrTemporary, "Timeout")
}

func TestCallerCancelled(t *testing.T) {
	idp := newTestIdP(t)
	idp.hang = make(chan struct{})
	clk := newClock()
	token := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := v.Validate(ctx, Request{Token: token, Protocol: "imap"})
	checkErr(t, err, ErrTemporary, "abandoned")
}

func TestJWKSTooLarge(t *testing.T) {
	idp := newTestIdP(t)
	idp.huge.Store(true)
	clk := newClock()
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
	_, err := v.Validate(context.Background(), Request{Token: idp.sign(t, tokenSpec{}, idp.claims(clk.Now())), Protocol: "imap"})
	checkErr(t, err, ErrTemporary, "larger than 1048576 bytes")
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Issuers[0].Issuer = idp.URL() + "/tenant"
	cfg.Issuers[0].DiscoveryURL = idp.URL() + "/.well-known/openid-configuration"
	c := idp.claims(clk.Now())
	c["iss"] = cfg.Issuers[0].Issuer
	v, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	_, err := v.Validate(context.Background(), Request{Token: idp.sign(t, tokenSpec{}, c), Protocol: "imap"})
	checkErr(t, err, ErrTemporary, "names issuer")
}

// A JWK Set refetch for an unknown kid happens at most once per refreshMinInterval, and a key
// the IdP rotates in is picked up after it.
func TestUnknownKidRefetchRateLimited(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
	ctx := context.Background()
	validate := func(spec tokenSpec) error {
		_, err := v.Validate(ctx, Request{Token: idp.sign(t, spec, idp.claims(clk.Now())), Protocol: "imap"})
		return err
	}
	if err := validate(tokenSpec{}); err != nil {
		t.Fatal(err)
	}
	rotated, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	next := tokenSpec{key: rotated, kid: "rsa-2"}
	for range 3 {
		checkErr(t, validate(next), ErrInvalidToken, "no signing key")
	}
	if got := idp.jwks.Load(); got != 1 {
		t.Fatalf("JWKS fetches = %d, want 1", got)
	}

	idp.mu.Lock()
	idp.extra = []jose.JSONWebKey{{Key: &rotated.PublicKey, KeyID: "rsa-2", Algorithm: "RS256"}}
	idp.mu.Unlock()
	clk.Add(refreshMinInterval)
	if err := validate(next); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if err := validate(tokenSpec{}); err != nil {
		t.Fatalf("old key: %v", err)
	}
	if got := idp.jwks.Load(); got != 2 {
		t.Errorf("JWKS fetches = %d, want 2", got)
	}
}

// Keys older than keysMaxAge are refetched on use; if that fails they keep working.
func TestStaleKeys(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
	validate := func() error {
		_, err := v.Validate(context.Background(), Request{Token: idp.sign(t, tokenSpec{}, idp.claims(clk.Now())), Protocol: "imap"})
		return err
	}
	if err := validate(); err != nil {
		t.Fatal(err)
	}
	clk.Add(keysMaxAge)
	if err := validate(); err != nil {
		t.Fatal(err)
	}
	if got := idp.jwks.Load(); got != 2 {
		t.Fatalf("JWKS fetches = %d, want 2", got)
	}
	clk.Add(keysMaxAge)
	idp.down.Store(true)
	if err := validate(); err != nil {
		t.Fatalf("stale keys while IdP down: %v", err)
	}
}

func TestCacheHit(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache.Disabled = false
	v, calls := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	token := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	for range 3 {
		id, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"})
		if err != nil || id.User != "alice@example.com" {
			t.Fatalf("Validate = %+v, %v", id, err)
		}
	}
	if calls.Load() != 1 || idp.requests() != 2 {
		t.Errorf("validations = %d, IdP requests = %d; want 1, 2", calls.Load(), idp.requests())
	}
	// The protocol is part of the key: the same token lacks the smtp scope.
	_, err := v.Validate(context.Background(), Request{Token: token, Protocol: "smtp"})
	checkErr(t, err, ErrInsufficientScope, "smtp")
	if calls.Load() != 2 {
		t.Errorf("validations = %d, want 2", calls.Load())
	}
}

func TestCacheTTL(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache = CacheConfig{TTL: config.Duration(time.Minute)}
	v, calls := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	req := Request{Token: idp.sign(t, tokenSpec{}, idp.claims(clk.Now())), Protocol: "imap"}
	for _, step := range []struct {
		advance time.Duration
		calls   int64
	}{{0, 1}, {59 * time.Second, 1}, {time.Second, 2}, {30 * time.Second, 2}} {
		clk.Add(step.advance)
		if _, err := v.Validate(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if calls.Load() != step.calls {
			t.Fatalf("after +%v: validations = %d, want %d", step.advance, calls.Load(), step.calls)
		}
	}
}

func TestCacheNeverOutlivesExp(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache.Disabled = false // TTL 5m
	v, calls := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	c := idp.claims(clk.Now())
	exp := clk.Now().Add(2 * time.Minute)
	c["exp"] = exp.Unix()
	req := Request{Token: idp.sign(t, tokenSpec{}, c), Protocol: "imap"}
	ctx := context.Background()

	if _, err := v.Validate(ctx, req); err != nil {
		t.Fatal(err)
	}
	clk.Add(119 * time.Second)
	if _, err := v.Validate(ctx, req); err != nil || calls.Load() != 1 {
		t.Fatalf("before exp: err %v, validations %d (want cached)", err, calls.Load())
	}
	clk.Add(2 * time.Second) // past exp, within leeway: validated again, not served from cache
	if _, err := v.Validate(ctx, req); err != nil || calls.Load() != 2 {
		t.Fatalf("after exp within leeway: err %v, validations %d (want 2)", err, calls.Load())
	}
	clk.Add(DefaultLeeway)
	_, err := v.Validate(ctx, req)
	checkErr(t, err, ErrInvalidToken, "expired")
	if calls.Load() != 3 {
		t.Fatalf("validations = %d, want 3", calls.Load())
	}
}

func TestNegativeCache(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache.Disabled = false
	v, calls := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
	c := idp.claims(clk.Now())
	c["aud"] = "webmail"
	req := Request{Token: idp.sign(t, tokenSpec{}, c), Protocol: "imap"}
	for _, step := range []struct {
		advance time.Duration
		calls   int64
	}{{0, 1}, {DefaultCacheNegative - time.Second, 1}, {time.Second, 2}} {
		clk.Add(step.advance)
		_, err := v.Validate(context.Background(), req)
		checkErr(t, err, ErrInvalidToken, "audience")
		if calls.Load() != step.calls {
			t.Fatalf("after +%v: validations = %d, want %d", step.advance, calls.Load(), step.calls)
		}
	}
}

func TestConcurrentValidationsCoalesce(t *testing.T) {
	for _, disabled := range []bool{false, true} {
		t.Run(map[bool]string{false: "cache", true: "no cache"}[disabled], func(t *testing.T) {
			idp := newTestIdP(t)
			clk := newClock()
			cfg := baseConfig(idp)
			cfg.Cache.Disabled = disabled
			v, calls := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()))
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			v.testHookValidate = func() {
				calls.Add(1)
				once.Do(func() { close(entered) })
				<-release
			}
			req := Request{Token: idp.sign(t, tokenSpec{}, idp.claims(clk.Now())), Protocol: "imap"}
			const n = 20
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Go(func() {
					id, err := v.Validate(context.Background(), req)
					if err == nil && id.User != "alice@example.com" {
						err = errors.New("wrong user " + id.User)
					}
					errs <- err
				})
			}
			<-entered
			// Let the other goroutines reach the flight; a straggler arriving later would
			// start a second validation only without coalescing.
			time.Sleep(50 * time.Millisecond)
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if !disabled && calls.Load() != 1 {
				t.Errorf("validations = %d, want 1", calls.Load())
			}
			if disabled && calls.Load() >= n {
				t.Errorf("validations = %d, want fewer than %d", calls.Load(), n)
			}
			if idp.jwks.Load() != 1 {
				t.Errorf("JWKS fetches = %d, want 1", idp.jwks.Load())
			}
		})
	}
}

// Many different tokens arriving at once share one discovery and one JWKS fetch.
func TestConcurrentKeyFetchCoalesces(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	v, _ := newValidator(t, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
	var wg sync.WaitGroup
	for i := range 20 {
		c := idp.claims(clk.Now())
		c["jti"] = fmt.Sprint(i)
		token := idp.sign(t, tokenSpec{}, c)
		wg.Go(func() {
			if _, err := v.Validate(context.Background(), Request{Token: token, Protocol: "imap"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if idp.discovery.Load() != 1 || idp.jwks.Load() != 1 {
		t.Errorf("discovery, JWKS fetches = %d, %d; want 1, 1", idp.discovery.Load(), idp.jwks.Load())
	}
}

// Oversized or empty tokens and unknown protocols are refused before any parsing or caching.
func TestRejectedUpFront(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	v, calls := newValidator(t, clk, baseConfig(idp))
	valid := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	for _, r := range []Request{
		{Token: "", Protocol: "imap"},
		{Token: strings.Repeat("a", maxTokenSize+1), Protocol: "imap"},
		{Token: valid, Protocol: ""},
		{Token: valid, Protocol: "IMAP"},
	} {
		_, err := v.Validate(context.Background(), r)
		checkErr(t, err, ErrInvalidToken, "")
	}
	if calls.Load() != 0 || idp.requests() != 0 {
		t.Errorf("validations, IdP requests = %d, %d; want 0, 0", calls.Load(), idp.requests())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(context.Background(), Config{})
	if err == nil || !strings.Contains(err.Error(), "tokens.issuers") {
		t.Fatalf("New(empty config) = %v", err)
	}
	cfg := Config{Issuers: []IssuerConfig{{Issuer: "https://idp.example.com", Audience: []string{"a"}, CAFile: "/nonexistent/ca.pem"}}}
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("New(missing CA file) = %v", err)
	}
}

func TestHTTPClientRefusesDowngradeRedirect(t *testing.T) {
	c, err := newHTTPClient(nil, IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeout != DefaultTimeout {
		t.Errorf("Timeout = %v", c.Timeout)
	}
	from, _ := http.NewRequest(http.MethodGet, "https://idp.example.com/jwks", nil)
	to, _ := http.NewRequest(http.MethodGet, "http://idp.example.com/jwks", nil)
	if err := c.CheckRedirect(to, []*http.Request{from}); err == nil {
		t.Error("https → http redirect allowed")
	}
	to, _ = http.NewRequest(http.MethodGet, "https://keys.example.com/jwks", nil)
	if err := c.CheckRedirect(to, []*http.Request{from}); err != nil {
		t.Errorf("https → https redirect refused: %v", err)
	}
}
