package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

var grantCache sync.Map // login → access token from the real grant

// grantToken returns an access token for login obtained through the real
// authorization code + PKCE flow (cached for the run).
func (e *env) grantToken(t *testing.T, login string) string {
	t.Helper()
	if v, ok := grantCache.Load(login); ok {
		return v.(string)
	}
	tok, err := e.idp.authorizationCodeToken(login)
	if err != nil {
		t.Fatalf("authorization code grant for %s: %v", login, err)
	}
	grantCache.Store(login, tok)
	return tok
}

// mint returns a token from the IdP's /test/mint, signed with its real key.
func (e *env) mint(t *testing.T, i *idp, r mintRequest) string {
	t.Helper()
	tok, err := i.mint(r)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// validClaims returns the claims of a fresh, valid token for alice from the real IdP,
// as a template for forged tokens, plus the kid of the IdP's signing key.
func (e *env) validClaims(t *testing.T) (claims map[string]any, kid string) {
	t.Helper()
	h, p, err := jwtParts(e.mint(t, e.idp, mintRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	kid, _ = h["kid"].(string)
	return p, kid
}

// signJWS signs claims with key/alg, header typ at+jwt and the given kid.
func signJWS(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// freshKeyToken signs valid-looking claims (right iss, aud, exp) with a new RSA key
// the IdP never published.
func (e *env) freshKeyToken(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signJWS(t, jose.RS256, key, kid, claims)
}

// algNoneToken is an unsigned JWS (RFC 7515 "none") with the IdP's claims and kid.
func algNoneToken(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// hmacWithPublicKeyTokens are the classic algorithm-confusion forgeries: HS256 with
// the IdP's published RSA public key (PEM, as a naive verifier would load it, and
// raw PKIX DER) as the HMAC secret.
func (e *env) hmacWithPublicKeyTokens(t *testing.T, kid string, claims map[string]any) (withPEM, withDER string) {
	t.Helper()
	raw, err := e.idp.jwks()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	keys := set.Key(kid)
	if len(keys) == 0 {
		t.Fatalf("kid %q not in JWKS %s", kid, raw)
	}
	pub, ok := keys[0].Key.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("JWKS key %q is %T, want RSA", kid, keys[0].Key)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return signJWS(t, jose.HS256, pemKey, kid, claims), signJWS(t, jose.HS256, der, kid, claims)
}

// tamperedToken keeps the IdP's real signature but swaps in other claims.
func tamperedToken(t *testing.T, token string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	p, _ := json.Marshal(claims)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
}

func withClaims(base map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}
