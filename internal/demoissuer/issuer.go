package demoissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Defaults used when no Option overrides them.
const (
	DefaultDomain   = "example.com"
	DefaultAudience = "saslgate"
	DefaultTTL      = time.Hour
	// DefaultClientID is the client_id claim when neither the token request
	// nor Claims names one (RFC 9068 §2.2 requires the claim).
	DefaultClientID = "saslgate-demo"
	// DefaultScope is granted by the token endpoint when the request has no
	// scope parameter (RFC 6749 §3.3 lets the server pick a default).
	DefaultScope = "openid email"
	// DefaultAlgorithm signs tokens with an RSA-2048 key, what most identity
	// providers do; WithAlgorithm("ES256") signs with a P-256 key instead.
	DefaultAlgorithm = "RS256"
)

// keyGenerators are the signing algorithms WithAlgorithm accepts, each with
// the key it needs.
var keyGenerators = map[string]func() (crypto.Signer, error){
	"RS256": func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	"ES256": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
}

// Issuer is an in-memory OpenID issuer. It is safe for concurrent use.
type Issuer struct {
	url      string // exact iss, as given to New
	base     string // url without a trailing slash, for endpoint URLs
	path     string // path of base, the prefix Handler serves under
	domain   string
	audience string
	ttl      time.Duration
	now      func() time.Time
	users    map[string][sha256.Size]byte // user → SHA-256(password)

	alg    string
	key    crypto.Signer
	kid    string
	signer jose.Signer

	discovery []byte // the discovery document, marshalled once
	jwks      []byte // the JWK Set, marshalled once
}

// Option configures an Issuer in New.
type Option func(*Issuer)

// WithDomain sets the domain appended to usernames to form the email claim
// of tokens from the token endpoint (default DefaultDomain).
func WithDomain(domain string) Option { return func(i *Issuer) { i.domain = domain } }

// WithAudience sets the aud claim used when Claims.Audience is empty and for
// tokens from the token endpoint (default DefaultAudience).
func WithAudience(aud string) Option { return func(i *Issuer) { i.audience = aud } }

// WithNow sets the clock used for iat and exp, so tests can mint tokens at
// a fixed instant (default time.Now).
func WithNow(now func() time.Time) Option { return func(i *Issuer) { i.now = now } }

// WithAlgorithm sets the JWS algorithm tokens are signed with, and so the
// key New generates: "RS256" (RSA-2048, the default) or "ES256" (P-256).
func WithAlgorithm(alg string) Option { return func(i *Issuer) { i.alg = alg } }

// WithTTL sets the lifetime of issued tokens when Claims.TTL is zero and of
// tokens from the token endpoint (default DefaultTTL).
func WithTTL(ttl time.Duration) Option { return func(i *Issuer) { i.ttl = ttl } }

// New returns an Issuer whose iss is issuerURL and whose token endpoint
// accepts the given user → password pairs. It generates a fresh signing key
// in memory: RSA-2048 unless WithAlgorithm says otherwise. issuerURL must be an absolute http or https URL
// without query or fragment; Handler serves under its path.
func New(issuerURL string, users map[string]string, opts ...Option) (*Issuer, error) {
	i := &Issuer{
		url:      issuerURL,
		base:     strings.TrimSuffix(issuerURL, "/"),
		domain:   DefaultDomain,
		audience: DefaultAudience,
		ttl:      DefaultTTL,
		alg:      DefaultAlgorithm,
		now:      time.Now,
		users:    make(map[string][sha256.Size]byte, len(users)),
	}
	for _, o := range opts {
		o(i)
	}
	if err := i.validate(); err != nil {
		return nil, err
	}
	for u, p := range users {
		i.users[u] = sha256.Sum256([]byte(p))
	}

	key, err := keyGenerators[i.alg]()
	if err != nil {
		return nil, fmt.Errorf("demoissuer: generate key: %w", err)
	}
	pub := jose.JSONWebKey{Key: key.Public(), Algorithm: i.alg, Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("demoissuer: key thumbprint: %w", err)
	}
	// RFC 7638 §3: the thumbprint, base64url without padding, is a natural kid.
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	i.key, i.kid = key, pub.KeyID

	// RFC 9068 §2.1: typ "at+jwt" tells access tokens apart from ID tokens.
	so := (&jose.SignerOptions{}).WithType("at+jwt").WithHeader(jose.HeaderKey("kid"), i.kid)
	if i.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(i.alg), Key: key}, so); err != nil {
		return nil, fmt.Errorf("demoissuer: signer: %w", err)
	}
	if i.jwks, err = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}}); err != nil {
		return nil, fmt.Errorf("demoissuer: marshal JWKS: %w", err)
	}
	if i.discovery, err = json.Marshal(i.discoveryDocument()); err != nil {
		return nil, fmt.Errorf("demoissuer: marshal discovery: %w", err)
	}
	return i, nil
}

func (i *Issuer) validate() error {
	var errs []error
	u, err := url.Parse(i.url)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("demoissuer: issuer URL: %w", err))
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		errs = append(errs, fmt.Errorf("demoissuer: issuer URL %q: want an absolute http or https URL", i.url))
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		// OpenID Connect Discovery 1.0 §3 (issuer): no query or fragment.
		errs = append(errs, fmt.Errorf("demoissuer: issuer URL %q: no query, fragment or userinfo allowed", i.url))
	default:
		i.path = strings.TrimSuffix(u.Path, "/")
	}
	if i.domain == "" {
		errs = append(errs, errors.New("demoissuer: domain: must not be empty"))
	}
	if i.audience == "" {
		errs = append(errs, errors.New("demoissuer: audience: must not be empty"))
	}
	if i.ttl <= 0 {
		errs = append(errs, fmt.Errorf("demoissuer: ttl: %v is not positive", i.ttl))
	}
	if _, ok := keyGenerators[i.alg]; !ok {
		errs = append(errs, fmt.Errorf("demoissuer: algorithm %q: want RS256 or ES256", i.alg))
	}
	if i.now == nil {
		errs = append(errs, errors.New("demoissuer: now: must not be nil"))
	}
	return errors.Join(errs...)
}

// URL returns the issuer identifier (the iss claim), exactly as given to New.
func (i *Issuer) URL() string { return i.url }

// Key returns the signing key (*rsa.PrivateKey for RS256, *ecdsa.PrivateKey
// for ES256), so tests can forge tokens the issuer would never mint (other
// typ, alg or header fields) that still verify against its JWKS.
func (i *Issuer) Key() crypto.Signer { return i.key }

// Algorithm returns the JWS algorithm the issuer signs with.
func (i *Issuer) Algorithm() string { return i.alg }

// KeyID returns the kid of the signing key, its RFC 7638 SHA-256 thumbprint.
func (i *Issuer) KeyID() string { return i.kid }

// Claims describes one access token for Mint.
type Claims struct {
	Subject  string   // sub
	Email    string   // email; omitted when empty
	Audience []string // aud; the issuer's audience when empty
	Scope    string   // scope, space-separated; omitted when empty
	ClientID string   // client_id; DefaultClientID when empty
	// TTL sets exp = iat + TTL. Zero means the issuer's TTL; a negative TTL
	// mints a token that has already expired.
	TTL time.Duration
	// Extra claims are applied last and override any claim above, including
	// iss, exp and jti. A nil value removes the claim; use
	// json.RawMessage("null") for a literal JSON null.
	Extra map[string]any
}

// Mint signs an RFC 9068 JWT access token: header alg (Algorithm), typ "at+jwt"
// and kid; claims iss, sub, aud, exp, iat, jti, client_id, and scope and
// email when set, then Extra.
func (i *Issuer) Mint(c Claims) (string, error) {
	now := i.now()
	ttl := c.TTL
	if ttl == 0 {
		ttl = i.ttl
	}
	clientID := c.ClientID
	if clientID == "" {
		clientID = DefaultClientID
	}
	claims := map[string]any{
		"iss":       i.url,
		"sub":       c.Subject,
		"aud":       audience(c.Audience, i.audience),
		"iat":       now.Unix(),
		"exp":       now.Add(ttl).Unix(),
		"jti":       rand.Text(),
		"client_id": clientID,
	}
	if c.Scope != "" {
		claims["scope"] = c.Scope
	}
	if c.Email != "" {
		claims["email"] = c.Email
	}
	for k, v := range c.Extra {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("demoissuer: marshal claims: %w", err)
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("demoissuer: sign: %w", err)
	}
	return jws.CompactSerialize()
}

// audience returns aud as a single string when it has one member, the form
// most issuers use; RFC 7519 §4.1.3 allows either.
func audience(aud []string, def string) any {
	switch len(aud) {
	case 0:
		return def
	case 1:
		return aud[0]
	default:
		return aud
	}
}
