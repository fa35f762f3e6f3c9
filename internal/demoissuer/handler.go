package demoissuer

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

const (
	discoveryPath = "/.well-known/openid-configuration"
	jwksPath      = "/jwks"
	tokenPath     = "/token"

	maxTokenRequest = 64 << 10
)

// discoveryDocument lists what OpenID Connect Discovery 1.0 §3 requires or
// go-oidc reads. There is no authorization_endpoint: the password grant
// does not use one.
func (i *Issuer) discoveryDocument() map[string]any {
	return map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.base + jwksPath,
		"token_endpoint":                        i.base + tokenPath,
		"grant_types_supported":                 []string{"password"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{i.alg},
		"scopes_supported":                      []string{"openid", "email"},
	}
}

// Handler serves the discovery document, the JWK Set and the token
// endpoint under the issuer URL's path.
func (i *Issuer) Handler() http.Handler {
	routes := map[string]struct {
		method string
		serve  http.HandlerFunc
	}{
		i.path + discoveryPath: {http.MethodGet, i.serveJSON(i.discovery)},
		i.path + jwksPath:      {http.MethodGet, i.serveJSON(i.jwks)},
		i.path + tokenPath:     {http.MethodPost, i.serveToken},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routes[r.URL.Path]
		switch {
		case !ok:
			http.NotFound(w, r)
		case r.Method == rt.method, r.Method == http.MethodHead && rt.method == http.MethodGet:
			rt.serve(w, r)
		default:
			w.Header().Set("Allow", rt.method)
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		}
	})
}

func (i *Issuer) serveJSON(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

// tokenResponse is the RFC 6749 §5.1 success body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// serveToken implements the resource-owner password grant, RFC 6749 §4.3.2.
func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	if err := r.ParseForm(); err != nil {
		tokenError(w, "invalid_request", "malformed form body")
		return
	}
	// RFC 6749 §3.2: parameters come in the body and at most once each.
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			tokenError(w, "invalid_request", "repeated parameter "+k)
			return
		}
	}
	switch form.Get("grant_type") {
	case "password":
	case "":
		tokenError(w, "invalid_request", "missing grant_type")
		return
	default:
		tokenError(w, "unsupported_grant_type", "only the password grant is supported")
		return
	}
	user, pass := form.Get("username"), form.Get("password")
	if user == "" || !form.Has("password") {
		tokenError(w, "invalid_request", "missing username or password")
		return
	}
	if !i.checkPassword(user, pass) {
		tokenError(w, "invalid_grant", "wrong username or password")
		return
	}
	scope := form.Get("scope")
	if scope == "" {
		scope = DefaultScope
	}
	clientID := form.Get("client_id")
	if clientID == "" {
		// RFC 6749 §2.3.1: a client may authenticate with HTTP Basic
		// instead; the secret is not checked (any client is accepted).
		clientID, _, _ = r.BasicAuth()
	}
	tok, err := i.Mint(Claims{Subject: user, Email: i.email(user), Scope: scope, ClientID: clientID})
	if err != nil {
		http.Error(w, "demoissuer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeTokenJSON(w, http.StatusOK, tokenResponse{
		AccessToken: tok,
		TokenType:   "Bearer",
		ExpiresIn:   int64(i.ttl.Seconds()),
		Scope:       scope,
	})
}

// checkPassword compares SHA-256 digests in constant time, so neither the
// password's length nor whether the user exists shows in the timing.
func (i *Issuer) checkPassword(user, pass string) bool {
	want, ok := i.users[user]
	got := sha256.Sum256([]byte(pass))
	eq := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	return ok && eq
}

// email returns the email claim for a token endpoint user: the username
// itself when it already is an address, else user@domain.
func (i *Issuer) email(user string) string {
	if strings.Contains(user, "@") {
		return user
	}
	return user + "@" + i.domain
}

// tokenError writes an RFC 6749 §5.2 error response.
func tokenError(w http.ResponseWriter, code, description string) {
	writeTokenJSON(w, http.StatusBadRequest, map[string]string{
		"error":             code,
		"error_description": description,
	})
}

func writeTokenJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// RFC 6749 §5.1: token responses must not be cached.
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
