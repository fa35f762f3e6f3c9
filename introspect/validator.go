package introspect

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	Expiry         time.Time // zero when the issuer did not say (introspection without exp, userinfo)
	CertThumbprint string    // cnf.x5t#S256 of the JWT or the introspection response (RFC 8705 §3), "" if absent
}

// Request is one token to validate.
type Request struct {
	Token    string // never logged
	Protocol string // one of Config.Protocols: selects required scopes
}

// Validator validates access tokens against the configured issuers. It is safe for concurrent
// use.
type Validator struct {
	issuers map[string]*issuer // by "iss", every mode
	opaque  []*issuer          // the issuers in mode introspection or userinfo, in config order
	only    *issuer            // the single configured issuer, if there is one: its discovery URL goes into every error
	// protocols are Config.Protocols: the only names a Request may carry, when set.
	protocols []string

	now    func() time.Time
	log    *slog.Logger
	client *http.Client
	obs    Observer // nil: nothing observed

	cache  *expirable.LRU[cacheKey, cacheEntry] // nil when disabled
	ttl    time.Duration
	negTTL time.Duration
	flight singleflight.Group
	shared SharedCache // nil: this process's cache only (cache.go)

	testHookValidate func() // called on every uncached validation; tests only
}

// Option configures a Validator.
type Option func(*Validator)

// WithHTTPClient makes the Validator talk to identity providers with a copy of c (the issuer's
// timeout is set when c has none). The issuers' ca_file and insecure_skip_verify are then
// ignored.
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
	http      *idpClient

	// resourceProtocols are the protocols each of cfg.Resources serves, sorted, for the
	// reason a token for another protocol's resource is refused.
	resourceProtocols map[string][]string

	// mode jwt
	algs     []jose.SignatureAlgorithm
	keys     *keySet
	verifier *oidc.IDTokenVerifier

	// modes introspection and userinfo
	endpoint *endpoint
	secret   clientSecret // introspection client secret
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
	v := &Validator{issuers: make(map[string]*issuer, len(cfg.Issuers)), protocols: slices.Clone(cfg.Protocols), now: time.Now}
	for _, o := range opts {
		o(v)
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	for i, ic := range cfg.Issuers {
		ic = ic.withDefaults()
		is, err := v.newIssuer(ic)
		if err != nil {
			return nil, fmt.Errorf("introspect: %s.issuers[%d].%w", configPrefix, i, err)
		}
		v.issuers[ic.Issuer] = is
		if ic.Mode != modeJWT {
			v.opaque = append(v.opaque, is)
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

// Close drops the cached validations, for a Validator being replaced (SIGHUP). The cache's
// expiry goroutine (golang-lru/v2's expirable LRU has no way to stop it) stays, idle and
// holding an empty cache; validations still in flight may add entries, which expire as usual.
func (v *Validator) Close() {
	if v.cache != nil {
		v.cache.Purge()
	}
}

func (v *Validator) newIssuer(ic IssuerConfig) (*issuer, error) {
	client, err := newIDPClient(v.client, ic)
	if err != nil {
		return nil, err
	}
	client.obs = v.obs
	is := &issuer{
		cfg:       ic,
		username:  newUsernamePolicy(ic.Username),
		scopeText: make(map[string]string, len(ic.Scopes)),
		http:      client,
	}
	for proto, s := range ic.Scopes {
		is.scopeText[proto] = strings.Join(s, " ")
	}
	is.resourceProtocols = make(map[string][]string)
	for _, proto := range slices.Sorted(maps.Keys(ic.Resources)) {
		for _, r := range ic.Resources[proto] {
			if !slices.Contains(is.resourceProtocols[r], proto) {
				is.resourceProtocols[r] = append(is.resourceProtocols[r], proto)
			}
		}
	}
	switch ic.Mode {
	case modeJWT:
		is.keys = &keySet{
			issuer:       ic.Issuer,
			discoveryURL: ic.DiscoveryURL,
			http:         client,
			now:          v.now,
			log:          v.log,
		}
		for _, a := range ic.Algorithms {
			is.algs = append(is.algs, jose.SignatureAlgorithm(a))
		}
		// go-oidc checks the signature (through keys), alg, iss and exp. Its other checks are
		// for ID tokens, so:
		//   - aud: SkipClientIDCheck, because it takes one ClientID and we accept a list;
		//     issuer.accept checks aud.
		//   - exp leeway: it has none, so its Now runs leeway behind our clock and exp is
		//     accepted until exp+leeway, as nbf is from nbf-leeway.
		//   - nbf: it allows a fixed 5 minutes of skew; issuer.accept checks with leeway.
		// InsecureSkipSignatureCheck stays false.
		leeway, now := ic.Leeway.D(), v.now
		is.verifier = oidc.NewVerifier(ic.Issuer, is.keys, &oidc.Config{
			SkipClientIDCheck:    true,
			SupportedSigningAlgs: ic.Algorithms,
			Now:                  func() time.Time { return now().Add(-leeway) },
		})
	case modeIntrospection, modeUserinfo:
		is.endpoint = &endpoint{
			member:       "userinfo_endpoint",
			url:          ic.UserinfoEndpoint,
			issuer:       ic.Issuer,
			discoveryURL: ic.DiscoveryURL,
			http:         client,
			now:          v.now,
			log:          v.log,
		}
		if ic.Mode == modeIntrospection {
			is.endpoint.member, is.endpoint.url = "introspection_endpoint", ic.IntrospectionEndpoint
			if is.secret, err = readClientSecret(ic.ClientSecretFile); err != nil {
				return nil, fmt.Errorf("client_secret_file: %w", err)
			}
		}
	}
	return is, nil
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
	if len(v.protocols) > 0 && !slices.Contains(v.protocols, r.Protocol) {
		return Identity{}, v.fail(nil, invalid(fmt.Sprintf("unknown protocol %.16q", r.Protocol)))
	}
	start := time.Now() // latency is wall time, whatever clock WithNow set
	key := cacheKey{sum: sha256.Sum256([]byte(r.Token)), protocol: r.Protocol}
	if res, ok := v.cached(key); ok {
		v.observe(start, true, res.id, res.err)
		return res.id, res.err
	}
	ch := v.flight.DoChan(string(key.sum[:])+"\x00"+r.Protocol, func() (any, error) {
		// A flight that ended just before this one began has stored its result: without this
		// second look, a caller that missed the cache an instant before would ask the IdP again.
		if res, ok := v.cached(key); ok {
			return res, nil
		}
		// Detached from this caller: the others coalesced here still want the answer. Each
		// request to an IdP is bounded by that issuer's timeout, each store call by its own.
		ctx := context.WithoutCancel(ctx)
		share := v.shared != nil && v.cache != nil && v.sharesResult(r.Token)
		if share {
			if e, ok := v.sharedGet(ctx, r.Token, key); ok {
				v.cache.Add(key, e)
				return e.result, nil
			}
		}
		id, err := v.validate(ctx, r)
		if until, ok := v.store(key, id, err); ok && share {
			v.sharedPut(ctx, r.Token, key, id, err, until)
		}
		return result{id, err}, nil
	})
	select {
	case res := <-ch:
		rv := res.Val.(result)
		v.observe(start, false, rv.id, rv.err)
		return rv.id, rv.err
	case <-ctx.Done():
		e := v.fail(nil, temporary("validation abandoned", ctx.Err()))
		v.observe(start, false, Identity{}, e)
		return Identity{}, e
	}
}

func (v *Validator) cached(key cacheKey) (result, bool) {
	if v.cache == nil {
		return result{}, false
	}
	e, ok := v.cache.Get(key)
	if !ok || !v.now().Before(e.until) {
		return result{}, false
	}
	return e.result, true
}

// store caches a result until the time it returns; ok is false when it was not cached.
func (v *Validator) store(key cacheKey, id Identity, err error) (until time.Time, ok bool) {
	if v.cache == nil || errors.Is(err, ErrTemporary) {
		return time.Time{}, false
	}
	now := v.now()
	until = now.Add(v.negTTL)
	if err == nil {
		// RFC 7662 §4 and DESIGN.md: a cached result never outlives the token.
		until = now.Add(v.ttl)
		if !id.Expiry.IsZero() && id.Expiry.Before(until) {
			until = id.Expiry
		}
	}
	if until.After(now) {
		v.cache.Add(key, cacheEntry{result{id, err}, until})
		return until, true
	}
	return time.Time{}, false
}

// fail fills in the discovery URL of the issuer (if known) and returns e.
func (v *Validator) fail(is *issuer, e *Error) *Error {
	explicit := is
	if is == nil {
		is = v.only
	}
	if is != nil {
		e.Discovery = is.cfg.DiscoveryURL
	}
	if e.mode == "" {
		e.mode = modeNone
		if explicit != nil {
			e.mode = explicit.cfg.Mode
		}
	}
	return e
}
