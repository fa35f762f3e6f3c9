package introspect

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
)

// maxTokenSize bounds what is hashed and parsed; real access tokens are a few KiB.
const maxTokenSize = 64 << 10

// Identity is what a valid token says about its bearer.
// Its slices are shared between callers (results are cached) and must not be modified.
type Identity struct {
	User           string // mapped, normalised, validated mailbox username
	Subject        string
	Issuer         string
	ClientID       string // client_id, or azp when client_id is absent
	Scopes         []string
	Audience       []string
	Expiry         time.Time
	CertThumbprint string // cnf.x5t#S256 if present ("" otherwise), for RFC 8705 (later issue)
}

// Request is one token to validate.
type Request struct {
	Token    string // never logged
	Protocol string // "imap" or "smtp": selects required scopes
}

// Validator validates access tokens against the configured issuers. It is safe for concurrent
// use.
type Validator struct {
	issuers map[string]*issuer
	only    *issuer // the single configured issuer, if there is one: its discovery URL goes into every error
	algs    []jose.SignatureAlgorithm

	now    func() time.Time
	log    *slog.Logger
	client *http.Client

	cache  *expirable.LRU[cacheKey, cacheEntry] // nil when disabled
	ttl    time.Duration
	negTTL time.Duration
	flight singleflight.Group

	testHookValidate func() // called on every uncached validation; tests only
}

// Option configures a Validator.
type Option func(*Validator)

// WithHTTPClient makes the Validator talk to identity providers with a copy of c (a timeout of
// 10s is set when c has none). The issuers' ca_file and insecure_skip_verify are then ignored.
func WithHTTPClient(c *http.Client) Option { return func(v *Validator) { v.client = c } }

// WithNow sets the clock used for expiry, caching and retry decisions (default time.Now).
func WithNow(now func() time.Time) Option { return func(v *Validator) { v.now = now } }

// WithLogger sets the logger for identity provider trouble (default: discard). Tokens are never
// logged.
func WithLogger(l *slog.Logger) Option { return func(v *Validator) { v.log = l } }

type issuer struct {
	cfg       IssuerConfig // with defaults
	username  usernamePolicy
	scopeText map[string]string // protocol → required scopes, space-separated
	keys      *keySet
	verifier  *oidc.IDTokenVerifier
}

type cacheKey struct {
	sum      [sha256.Size]byte
	protocol string
}

type result struct {
	id  Identity
	err error
}

type cacheEntry struct {
	result
	until time.Time // by the Validator's clock; the LRU's own TTL only evicts
}

// New returns a Validator for cfg. It does not contact any identity provider: discovery and keys
// are fetched on first use (and retried with backoff while the provider is unreachable). ctx is
// not retained.
func New(ctx context.Context, cfg Config, opts ...Option) (*Validator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Validator{issuers: make(map[string]*issuer, len(cfg.Issuers)), now: time.Now}
	for _, o := range opts {
		o(v)
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	for _, ic := range cfg.Issuers {
		ic = ic.withDefaults()
		client, err := newHTTPClient(v.client, ic)
		if err != nil {
			return nil, err
		}
		is := &issuer{
			cfg:       ic,
			username:  newUsernamePolicy(ic.Username),
			scopeText: make(map[string]string, len(ic.Scopes)),
			keys: &keySet{
				issuer:       ic.Issuer,
				discoveryURL: ic.DiscoveryURL,
				client:       client,
				now:          v.now,
				log:          v.log,
			},
		}
		for proto, s := range ic.Scopes {
			is.scopeText[proto] = strings.Join(s, " ")
		}
		// go-oidc checks the signature (through keys), alg, iss and exp. Its other checks are
		// for ID tokens, so:
		//   - aud: SkipClientIDCheck, because it takes one ClientID and we accept a list;
		//     issuer.validate checks aud.
		//   - exp leeway: it has none, so its Now runs leeway behind our clock and exp is
		//     accepted until exp+leeway, as nbf is from nbf-leeway.
		//   - nbf: it allows a fixed 5 minutes of skew; issuer.validate checks with leeway.
		// InsecureSkipSignatureCheck stays false.
		leeway, now := ic.Leeway.D(), v.now
		is.verifier = oidc.NewVerifier(ic.Issuer, is.keys, &oidc.Config{
			SkipClientIDCheck:    true,
			SupportedSigningAlgs: ic.Algorithms,
			Now:                  func() time.Time { return now().Add(-leeway) },
		})
		v.issuers[ic.Issuer] = is
		for _, a := range ic.Algorithms {
			if !slices.Contains(v.algs, jose.SignatureAlgorithm(a)) {
				v.algs = append(v.algs, jose.SignatureAlgorithm(a))
			}
		}
	}
	if len(cfg.Issuers) == 1 {
		v.only = v.issuers[cfg.Issuers[0].Issuer]
	}
	if !cfg.Cache.Disabled {
		v.ttl = cfg.Cache.TTL.Or(DefaultCacheTTL)
		v.negTTL = cfg.Cache.NegativeTTL.Or(DefaultCacheNegative)
		size := cfg.Cache.Size
		if size == 0 {
			size = DefaultCacheSize
		}
		v.cache = expirable.NewLRU[cacheKey, cacheEntry](size, nil, max(v.ttl, v.negTTL))
	}
	return v, nil
}

// Validate checks r.Token and maps it to an Identity. Every error is an *Error whose Kind is
// ErrInvalidToken, ErrInsufficientScope or ErrTemporary. Results are cached by a hash of the
// token and the protocol, and concurrent validations of one token share one check.
// Returned errors may be shared between callers and must not be modified.
func (v *Validator) Validate(ctx context.Context, r Request) (Identity, error) {
	if r.Token == "" {
		return Identity{}, v.fail(nil, invalid("empty token"))
	}
	if len(r.Token) > maxTokenSize {
		return Identity{}, v.fail(nil, invalid("token too large"))
	}
	// Fail closed: a protocol name the scope table does not know must not skip the scope check.
	if r.Protocol != protocolIMAP && r.Protocol != protocolSMTP {
		return Identity{}, v.fail(nil, invalid(fmt.Sprintf("unknown protocol %.16q", r.Protocol)))
	}
	key := cacheKey{sum: sha256.Sum256([]byte(r.Token)), protocol: r.Protocol}
	if v.cache != nil {
		if e, ok := v.cache.Get(key); ok && v.now().Before(e.until) {
			return e.id, e.err
		}
	}
	ch := v.flight.DoChan(string(key.sum[:])+"\x00"+r.Protocol, func() (any, error) {
		// Detached from this caller: the others coalesced here still want the answer.
		id, err := v.validate(context.WithoutCancel(ctx), r)
		v.store(key, id, err)
		return result{id, err}, nil
	})
	select {
	case res := <-ch:
		rv := res.Val.(result)
		return rv.id, rv.err
	case <-ctx.Done():
		e := temporary("validation abandoned", ctx.Err())
		return Identity{}, v.fail(nil, e)
	}
}

func (v *Validator) store(key cacheKey, id Identity, err error) {
	if v.cache == nil || errors.Is(err, ErrTemporary) {
		return
	}
	now := v.now()
	until := now.Add(v.negTTL)
	if err == nil {
		// RFC 7662 §4 and DESIGN.md: a cached result never outlives the token.
		until = now.Add(v.ttl)
		if id.Expiry.Before(until) {
			until = id.Expiry
		}
	}
	if until.After(now) {
		v.cache.Add(key, cacheEntry{result{id, err}, until})
	}
}

// fail fills in the discovery URL of the issuer (if known) and returns e.
func (v *Validator) fail(is *issuer, e *Error) *Error {
	if is == nil {
		is = v.only
	}
	if is != nil {
		e.Discovery = is.cfg.DiscoveryURL
	}
	return e
}

// validate routes the token to its issuer by the (not yet verified) iss claim.
func (v *Validator) validate(ctx context.Context, r Request) (Identity, error) {
	if v.testHookValidate != nil {
		v.testHookValidate()
	}
	// HS* and "none" are never in v.algs (Config.Validate), so the JOSE header check here
	// rejects them before any key is looked at: no HMAC keyed with a public key.
	jws, err := jose.ParseSignedCompact(r.Token, v.algs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return Identity{}, v.fail(nil, invalid(fmt.Sprintf("algorithm %.16q not allowed", alg.Got)))
		}
		return Identity{}, v.fail(nil, invalid("malformed JWT"))
	}
	var peek struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &peek) != nil {
		return Identity{}, v.fail(nil, invalid("malformed claims"))
	}
	is := v.issuers[peek.Issuer]
	if is == nil {
		return Identity{}, v.fail(nil, invalid("unknown issuer"))
	}
	id, e := is.validate(ctx, v.now(), jws, r)
	if e != nil {
		return Identity{}, v.fail(is, e)
	}
	return id, nil
}

// accessClaims are the claims read besides those go-oidc decodes.
type accessClaims struct {
	NotBefore *json.Number `json:"nbf"`
	IssuedAt  *json.Number `json:"iat"`
	JTI       string       `json:"jti"`
	ClientID  string       `json:"client_id"`
	AZP       string       `json:"azp"`
	Scope     spaceList    `json:"scope"`
	Scp       spaceList    `json:"scp"`
	Cnf       struct {
		X5tS256 string `json:"x5t#S256"`
	} `json:"cnf"`
}

// spaceList is a space-separated string (scope, RFC 9068 §2.2.3; scp as Azure AD sends it) or a
// JSON array of strings (scp as Okta sends it).
type spaceList []string

func (l *spaceList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = strings.Fields(s)
		return nil
	}
	var a []string
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*l = a
	return nil
}

func (is *issuer) validate(ctx context.Context, now time.Time, jws *jose.JSONWebSignature, r Request) (Identity, *Error) {
	h := jws.Signatures[0].Header
	if !slices.Contains(is.cfg.Algorithms, h.Algorithm) {
		return Identity{}, invalid(fmt.Sprintf("algorithm %q not allowed for this issuer", h.Algorithm))
	}
	// RFC 9068 §4: typ "at+jwt" or "application/at+jwt", compared case-insensitively.
	if is.cfg.RequireATJWT {
		typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
		if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
			return Identity{}, invalid("typ is not at+jwt")
		}
	}

	call := &verifyCall{jws: jws}
	tok, err := is.verifier.Verify(context.WithValue(ctx, verifyCallKey{}, call), r.Token)
	if err != nil {
		var expired *oidc.TokenExpiredError
		switch {
		case call.err != nil:
			return Identity{}, call.err
		case errors.As(err, &expired):
			return Identity{}, invalid("token expired")
		default:
			e := invalid("rejected by verifier")
			e.cause = err
			return Identity{}, e
		}
	}

	var c accessClaims
	var all map[string]json.RawMessage
	if tok.Claims(&c) != nil || tok.Claims(&all) != nil {
		return Identity{}, invalid("malformed claims")
	}
	if c.NotBefore != nil {
		nbf, err := c.NotBefore.Float64()
		if err != nil {
			return Identity{}, invalid("malformed nbf")
		}
		// Compared as floats: converting an absurd nbf to int64 could wrap into the past.
		if float64(now.Add(is.cfg.Leeway.D()).Unix()) < nbf {
			return Identity{}, invalid("token not yet valid")
		}
	}
	if !is.cfg.InsecureSkipAudienceCheck && !slices.ContainsFunc(tok.Audience, func(a string) bool {
		return slices.Contains(is.cfg.Audience, a)
	}) {
		return Identity{}, invalid("audience mismatch")
	}
	// RFC 9068 §2.2 required claims (iss, exp and aud are checked above).
	if is.cfg.RequireATJWT && (tok.Subject == "" || c.ClientID == "" || c.IssuedAt == nil || c.JTI == "") {
		return Identity{}, invalid("missing one of sub, client_id, iat, jti (RFC 9068 §2.2)")
	}

	var name string
	if raw, ok := all[is.cfg.UsernameClaim]; !ok {
		return Identity{}, invalid("username claim " + is.cfg.UsernameClaim + " missing")
	} else if json.Unmarshal(raw, &name) != nil {
		return Identity{}, invalid("username claim " + is.cfg.UsernameClaim + " is not a string")
	}
	user, err := is.username.apply(name)
	if err != nil {
		e := invalid("unusable username")
		e.cause = err
		return Identity{}, e
	}

	scopes := append([]string(c.Scope), c.Scp...)
	for _, want := range is.cfg.Scopes[r.Protocol] {
		if !slices.Contains(scopes, want) {
			return Identity{}, &Error{
				Kind:   ErrInsufficientScope,
				Reason: fmt.Sprintf("scope %q missing for %s", want, r.Protocol),
				Scope:  is.scopeText[r.Protocol],
			}
		}
	}

	clientID := c.ClientID
	if clientID == "" {
		clientID = c.AZP
	}
	return Identity{
		User:           user,
		Subject:        tok.Subject,
		Issuer:         tok.Issuer,
		ClientID:       clientID,
		Scopes:         scopes,
		Audience:       tok.Audience,
		Expiry:         tok.Expiry,
		CertThumbprint: c.Cnf.X5tS256,
	}, nil
}
