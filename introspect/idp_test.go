package introspect

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testIdP is an OpenID provider on loopback: a discovery document and a JWK Set holding one
// RS256 and one ES256 key, with switches to make it fail.
type testIdP struct {
	srv   *httptest.Server
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	extra []jose.JSONWebKey // further public keys served in the JWK Set

	down      atomic.Bool // discovery and JWKS answer 503
	hang      chan struct{}
	huge      atomic.Bool // JWKS answers with more than 1 MiB
	discovery atomic.Int64
	jwks      atomic.Int64
	mu        sync.Mutex
}

const (
	kidRSA = "rsa-1"
	kidEC  = "ec-1"
)

func newTestIdP(t testing.TB) *testIdP {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &testIdP{rsa: rk, ec: ek}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.discovery.Add(1)
		if p.fail(w, r) {
			return
		}
		writeJSON(w, map[string]any{"issuer": p.URL(), "jwks_uri": p.URL() + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		p.jwks.Add(1)
		if p.fail(w, r) {
			return
		}
		if p.huge.Load() {
			w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxResponseSize) + `"}`))
			return
		}
		p.mu.Lock()
		keys := append([]jose.JSONWebKey{
			{Key: &p.rsa.PublicKey, KeyID: kidRSA, Algorithm: "RS256", Use: "sig"},
			{Key: &p.ec.PublicKey, KeyID: kidEC, Algorithm: "ES256", Use: "sig"},
			// Never usable: a symmetric key and an encryption key.
			{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "oct-1", Algorithm: "HS256"},
			{Key: &p.rsa.PublicKey, KeyID: "enc-1", Use: "enc"},
		}, p.extra...)
		p.mu.Unlock()
		writeJSON(w, jose.JSONWebKeySet{Keys: keys})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		p.mu.Lock()
		if p.hang != nil {
			close(p.hang)
			p.hang = nil
		}
		p.mu.Unlock()
		p.srv.Close()
	})
	return p
}

func (p *testIdP) fail(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	hang := p.hang
	p.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		return true
	}
	if p.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}
	return false
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// URL is the issuer identifier.
func (p *testIdP) URL() string { return p.srv.URL }

func (p *testIdP) requests() int64 { return p.discovery.Load() + p.jwks.Load() }

// claims returns a valid RFC 9068 claim set for alice, valid for an hour from now.
func (p *testIdP) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss":       p.URL(),
		"sub":       "248289761001",
		"aud":       "saslgate",
		"client_id": "thunderbird",
		"iat":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"jti":       "dbe39bf3a3ba4238a513f51d6e1691c4",
		"scope":     "openid email",
		"email":     "Alice@Example.com",
	}
}

// tokenSpec describes how to sign a test token.
type tokenSpec struct {
	alg jose.SignatureAlgorithm // default RS256
	key any                     // default the IdP's key for alg
	kid string                  // default the IdP's kid for alg; "-" for none
	typ string                  // default "at+jwt"; "-" for none
}

func (p *testIdP) sign(t testing.TB, spec tokenSpec, claims map[string]any) string {
	t.Helper()
	if spec.alg == "" {
		spec.alg = jose.RS256
	}
	if spec.key == nil {
		key, kid := any(p.rsa), kidRSA
		if spec.alg == jose.ES256 {
			key, kid = p.ec, kidEC
		}
		spec.key = key
		if spec.kid == "" {
			spec.kid = kid
		}
	}
	opts := &jose.SignerOptions{}
	if spec.typ == "" {
		spec.typ = "at+jwt"
	}
	if spec.typ != "-" {
		opts = opts.WithType(jose.ContentType(spec.typ))
	}
	key := jose.SigningKey{Algorithm: spec.alg, Key: spec.key}
	if spec.kid != "" && spec.kid != "-" {
		key.Key = jose.JSONWebKey{Key: spec.key, KeyID: spec.kid}
	}
	signer, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned builds a token with the given JOSE header and an empty signature (alg "none").
func unsigned(header, claims map[string]any) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

// clock is a settable time source for WithNow.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
