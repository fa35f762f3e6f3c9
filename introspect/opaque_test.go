package introspect

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// opaqueIdP is an authorization server on loopback that issues opaque tokens: metadata, an
// RFC 7662 introspection endpoint that authenticates its caller, and a userinfo endpoint, each
// counting its requests.
type opaqueIdP struct {
	srv      *httptest.Server
	clientID string
	secret   string
	wantAuth string // client_secret_basic or client_secret_post

	mu        sync.Mutex
	responses map[string]map[string]any                         // token → introspection response; unknown: {"active":false}
	userinfo  map[string]map[string]any                         // token → userinfo response; unknown: 401
	handle    func(w http.ResponseWriter, r *http.Request) bool // runs first; true: it answered
	metadata  map[string]any                                    // served as discovery document

	discovery      atomic.Int64
	introspections atomic.Int64
	userinfos      atomic.Int64
}

func newOpaqueIdP(t testing.TB) *opaqueIdP {
	t.Helper()
	p := &opaqueIdP{
		clientID:  "saslgate",
		secret:    "s3cr:t+/ü", // needs RFC 6749 §2.3.1 form-encoding in Basic credentials
		wantAuth:  clientSecretBasic,
		responses: map[string]map[string]any{},
		userinfo:  map[string]map[string]any{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.discovery.Add(1)
		if p.override(w, r) {
			return
		}
		p.mu.Lock()
		doc := p.metadata
		p.mu.Unlock()
		if doc == nil {
			doc = map[string]any{
				"issuer":                 p.URL(),
				"introspection_endpoint": p.URL() + "/introspect",
				"userinfo_endpoint":      p.URL() + "/userinfo",
			}
		}
		writeJSON(w, doc)
	})
	mux.HandleFunc("POST /introspect", func(w http.ResponseWriter, r *http.Request) {
		p.introspections.Add(1)
		if p.override(w, r) {
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		var id, secret string
		user, pass, basic := r.BasicAuth()
		switch {
		case p.wantAuth == clientSecretBasic && basic && !r.PostForm.Has("client_secret"):
			id, _ = url.QueryUnescape(user)
			secret, _ = url.QueryUnescape(pass)
		case p.wantAuth == clientSecretPost && !basic:
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != p.clientID || secret != p.secret {
			w.Header().Set("WWW-Authenticate", `Basic realm="idp"`)
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		if r.PostForm.Get("token_type_hint") != "access_token" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		resp, ok := p.responses[r.PostForm.Get("token")]
		p.mu.Unlock()
		if !ok {
			resp = map[string]any{"active": false}
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("GET /userinfo", func(w http.ResponseWriter, r *http.Request) {
		p.userinfos.Add(1)
		if p.override(w, r) {
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p.mu.Lock()
		resp, known := p.userinfo[token]
		p.mu.Unlock()
		if !ok || !known {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		writeJSON(w, resp)
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *opaqueIdP) override(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	h := p.handle
	p.mu.Unlock()
	return h != nil && h(w, r)
}

func (p *opaqueIdP) setHandle(h func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.handle = h
	p.mu.Unlock()
}

// URL is the issuer identifier.
func (p *opaqueIdP) URL() string { return p.srv.URL }

// issue returns a new opaque token whose introspection response is resp (nil: never active).
func (p *opaqueIdP) issue(resp map[string]any) string {
	var b [16]byte
	rand.Read(b[:])
	token := "op_" + hex.EncodeToString(b[:])
	if resp != nil {
		p.mu.Lock()
		p.responses[token] = maps.Clone(resp)
		p.mu.Unlock()
	}
	return token
}

// issueUserinfo returns a new opaque token whose userinfo response is resp.
func (p *opaqueIdP) issueUserinfo(resp map[string]any) string {
	token := p.issue(nil)
	p.mu.Lock()
	p.userinfo[token] = maps.Clone(resp)
	p.mu.Unlock()
	return token
}

// active returns an RFC 7662 response for alice's active token, valid for an hour from now.
func (p *opaqueIdP) active(now time.Time) map[string]any {
	return map[string]any{
		"active":     true,
		"iss":        p.URL(),
		"sub":        "248289761001",
		"aud":        "saslgate",
		"client_id":  "thunderbird",
		"iat":        now.Unix(),
		"exp":        now.Add(time.Hour).Unix(),
		"scope":      "openid email",
		"username":   "Alice@Example.com",
		"token_type": "Bearer",
	}
}

// profile returns an OIDC userinfo response for alice.
func (p *opaqueIdP) profile() map[string]any {
	return map[string]any{"sub": "248289761001", "email": "Alice@Example.com", "email_verified": true}
}

// secretFile writes the IdP's client secret, with a trailing newline, to a private file.
func (p *opaqueIdP) secretFile(t testing.TB) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(f, []byte(p.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// introspectionIssuer is a policy for p's tokens in mode introspection.
func (p *opaqueIdP) introspectionIssuer(t testing.TB) IssuerConfig {
	return IssuerConfig{
		Issuer:           p.URL(),
		Mode:             modeIntrospection,
		ClientID:         p.clientID,
		ClientSecretFile: p.secretFile(t),
		Audience:         []string{"saslgate"},
		UsernameClaim:    "username",
		Username:         UsernameConfig{Lowercase: true},
		Scopes:           map[string][]string{"imap": {"email"}, "smtp": {"email", "smtp"}},
	}
}

// userinfoIssuer is a policy for p's tokens in mode userinfo.
func (p *opaqueIdP) userinfoIssuer() IssuerConfig {
	return IssuerConfig{
		Issuer:                    p.URL(),
		Mode:                      modeUserinfo,
		InsecureSkipAudienceCheck: true,
		Username:                  UsernameConfig{Lowercase: true},
	}
}
