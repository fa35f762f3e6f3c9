package backends

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/saslgate/saslgate/internal/config"
)

// RoutesConfig is the "routes" section: where each user's mailbox is. Sources are asked in
// order and the first that knows the user answers; a user none knows goes to the protocol's
// default pool. A source that fails, or answers something unusable, fails the login with a
// temporary error: it never falls through to the next source or to the default pool, where
// the user's mailbox is not.
type RoutesConfig struct {
	Sources []SourceConfig `yaml:"sources"`
	// CacheTTL is how long a source's answer (or its not knowing the user) is kept, per
	// protocol and user; default DefaultRouteTTL. Failures are not kept.
	CacheTTL config.Duration `yaml:"cache_ttl"`
	// CacheSize bounds the cached answers; default DefaultRouteCacheSize.
	CacheSize int `yaml:"cache_size"`
	// Timeout bounds one lookup of one source; default DefaultRouteTimeout.
	Timeout config.Duration `yaml:"timeout"`
	// Shared keeps the answers in the store of the shared section too, so that a lookup made
	// by one replica serves every replica for CacheTTL. Answers that carry a secret (auth_http
	// Auth-Pass, an LDAP secret attribute) stay local: no backend secret is ever stored there.
	Shared bool `yaml:"shared"`
}

// RouteStore is a store replicas share (internal/shared.Store implements it): Get returns
// nil and no error for a key it does not hold.
type RouteStore interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
}

// Route cache and lookup defaults.
const (
	DefaultRouteTTL       = time.Minute
	DefaultRouteCacheSize = 100000
	DefaultRouteTimeout   = 5 * time.Second
)

// SourceConfig is one route source: exactly one of its fields is set.
type SourceConfig struct {
	Static *StaticConfig `yaml:"static"`
	Hash   *HashConfig   `yaml:"hash"`
	HTTP   *HTTPConfig   `yaml:"http"`
	LDAP   *LDAPConfig   `yaml:"ldap"`
}

// HashConfig is the "hash" source: it answers every user with a pool, whose member is then
// chosen by rendezvous hashing (Pool.Pick), as for every pool answer.
type HashConfig struct {
	// Pool is the pool to hash over; default the protocol's default pool.
	Pool string `yaml:"pool"`
}

// Query is what a route source is asked: the user a valid token maps to, and the attempt.
// The token itself is never part of it.
type Query struct {
	Protocol  string // the registered protocol's name
	User      string
	Mechanism string // OAUTHBEARER, XOAUTH2 or LOGIN
	Client    Client
	Attempt   int // the connection's authentication attempt, from 1
}

// Answer is a source's route for a user: a pool, or a server (host or host:port), and
// optionally the backend user name and the secret to log in with.
type Answer struct {
	Pool   string
	Server string
	User   string
	Secret Secret
}

// Source is a route source.
type Source interface {
	// Name names the source kind in logs and metrics: static, hash, http, ldap.
	Name() string
	// Lookup answers q; found is false when the source does not know the user (the next
	// source is asked). An error is a failed lookup: the login fails, temporarily.
	Lookup(ctx context.Context, q Query) (a Answer, found bool, err error)
}

// RouteObserver receives route lookups and member health (internal/metrics implements it).
type RouteObserver interface {
	PoolObserver
	// RouteLookup is one route asked for: source is the source that answered ("default"
	// when none knew the user, "none" on error), result "cached", "shared" (another replica's
	// answer, from the shared store), "looked_up" or "error".
	RouteLookup(source, result string)
}

// Route is where one login goes.
type Route struct {
	// Source is the source that answered, or "default".
	Source string
	// Pool is the pool of Member, or the pool whose settings a non-member is dialled with.
	Pool *Pool
	// Member is the chosen member; nil for a server no pool lists (AllowNonMembers).
	Member *Member
	// Config is the server to log in to, with the pool's login mode.
	Config Config
	// User is the user name at the backend: the source's, or the validated user.
	User string
	// Secret is the backend secret the source gave; "" when it gave none.
	Secret Secret
}

// ErrRouteRefused is wrapped by the error of a route source that refused the user on
// purpose (an auth_http responder's Auth-Status): the login fails as a backend refusal.
var ErrRouteRefused = fmt.Errorf("%w: route source refused the user", ErrRejected)

// Router finds each login's route: sources, cache and coalescing, then a pool member.
// It is safe for concurrent use.
type Router struct {
	pools   *Pools
	sources []Source
	ttl     time.Duration
	timeout time.Duration
	cache   *lru.Cache[string, cachedAnswer]
	flight  singleflight.Group
	obs     RouteObserver
	now     func() time.Time
	store   RouteStore // nil: answers are cached in this process only
}

// Share keeps the router's answers in store as well as in its own cache (RoutesConfig.Shared).
// Call it before the first Route.
func (r *Router) Share(store RouteStore) { r.store = store }

type cachedAnswer struct {
	source  string // "" when no source knew the user
	answer  Answer
	expires time.Time
}

// NewRouter returns the router of pools with sources, asked in order.
func NewRouter(pools *Pools, sources []Source, cfg RoutesConfig, obs RouteObserver) *Router {
	size := cfg.CacheSize
	if size <= 0 {
		size = DefaultRouteCacheSize
	}
	c, _ := lru.New[string, cachedAnswer](size)
	return &Router{
		pools: pools, sources: sources, cache: c, obs: obs, now: time.Now,
		ttl:     cfg.CacheTTL.Or(DefaultRouteTTL),
		timeout: cfg.Timeout.Or(DefaultRouteTimeout),
	}
}

// Single is the router of one backend serving protocol: a one-member pool without health
// checks and no sources. It is what an "imap: backend:" section means, and what tests use.
func Single(protocol string, cfg Config) *Router {
	pc := PoolConfig{Name: "backend", Protocol: protocol, Config: cfg, Members: []MemberConfig{{Address: cfg.Address}}, HealthCheck: HealthConfig{Disabled: true}}
	ps, _ := NewPools([]PoolConfig{pc}, map[string]string{protocol: pc.Name})
	return NewRouter(ps, nil, RoutesConfig{}, nil)
}

// Pools are the router's pools.
func (r *Router) Pools() *Pools { return r.pools }

// Route finds q.User's route for q.Protocol. Its errors wrap ErrUnavailable (a source failed
// or answered something unusable; no member is up), or ErrRouteRefused.
func (r *Router) Route(ctx context.Context, q Query) (Route, error) {
	source, a, err := r.lookup(ctx, q)
	if err != nil {
		r.observe("none", "error")
		return Route{}, err
	}
	return r.resolve(q, source, a)
}

func (r *Router) observe(source, result string) {
	if r.obs != nil {
		r.obs.RouteLookup(source, result)
	}
}

// lookup asks the cache, then the sources, with concurrent lookups of one key coalesced.
func (r *Router) lookup(ctx context.Context, q Query) (string, Answer, error) {
	if len(r.sources) == 0 {
		r.observe("default", "cached")
		return "", Answer{}, nil
	}
	key := q.Protocol + "\x00" + q.User
	if c, ok := r.cache.Get(key); ok && r.now().Before(c.expires) {
		r.observe(sourceLabel(c.source), "cached")
		return c.source, c.answer, nil
	}
	// Not found here: another replica may have asked the sources already (sharedGet, under
	// the same coalescing).
	ch := r.flight.DoChan(key, func() (any, error) {
		// One lookup serves every waiter: it is not cancelled with the first one's client.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		defer cancel()
		if c, ok := r.sharedGet(lctx, q); ok {
			r.cache.Add(key, c)
			r.observe(sourceLabel(c.source), "shared")
			return c, nil
		}
		c, err := r.ask(lctx, q)
		if err != nil {
			return nil, err
		}
		c.expires = r.now().Add(r.ttl)
		r.cache.Add(key, c)
		r.sharedPut(lctx, q, c)
		r.observe(sourceLabel(c.source), "looked_up")
		return c, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", Answer{}, res.Err
		}
		c := res.Val.(cachedAnswer)
		return c.source, c.answer, nil
	case <-ctx.Done():
		return "", Answer{}, &loginError{kind: ErrUnavailable, msg: "backends: route lookup for " + strconv.Quote(q.User), cause: ctx.Err()}
	}
}

func sourceLabel(source string) string {
	if source == "" {
		return "default"
	}
	return source
}

// ask asks the sources in order; the first that knows the user answers.
func (r *Router) ask(ctx context.Context, q Query) (cachedAnswer, error) {
	for _, s := range r.sources {
		a, found, err := s.Lookup(ctx, q)
		if err != nil {
			if errors.Is(err, ErrRejected) || errors.Is(err, ErrUnavailable) {
				return cachedAnswer{}, err
			}
			return cachedAnswer{}, &loginError{kind: ErrUnavailable, msg: fmt.Sprintf("backends: route source %s failed for %q", s.Name(), q.User), cause: err}
		}
		if !found {
			continue
		}
		if err := a.check(); err != nil {
			return cachedAnswer{}, &loginError{kind: ErrUnavailable, msg: fmt.Sprintf("backends: route source %s answered %q with an unusable route", s.Name(), q.User), cause: err}
		}
		return cachedAnswer{source: s.Name(), answer: a}, nil
	}
	return cachedAnswer{}, nil
}

// check refuses an answer that must not reach a dial or a backend command line.
func (a Answer) check() error {
	switch {
	case a.Pool != "" && a.Server != "":
		return errors.New("names both a pool and a server")
	case a.Pool == "" && a.Server == "":
		return errors.New("names neither a pool nor a server")
	case a.Pool != "" && !validPoolName(a.Pool):
		return fmt.Errorf("pool %q is not a pool name", sanitize(a.Pool))
	case a.User != "" && (len(a.User) > maxUsernameLen || strings.ContainsFunc(a.User, isControl)):
		return fmt.Errorf("backend user %q has control characters or is longer than %d bytes", sanitize(a.User), maxUsernameLen)
	case strings.ContainsAny(a.Secret.Reveal(), "\r\n\x00"):
		return errors.New("secret has CR, LF or NUL (secret redacted)")
	}
	if a.Server != "" {
		if _, _, err := SplitServer(a.Server); err != nil {
			return err
		}
	}
	return nil
}

// SplitServer splits a route's server, host or host:port, into host and port ("" when
// absent), refusing anything that is not a DNS name or an IP address with an optional port
// from 1 to 65535: no spaces, control bytes, schemes or paths.
func SplitServer(s string) (host, port string, err error) {
	host = s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		if host, port, err = net.SplitHostPort(s); err != nil {
			return "", "", fmt.Errorf("server %q is not host or host:port", sanitize(s))
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "", "", fmt.Errorf("server %q: port must be a number from 1 to 65535", sanitize(s))
		}
	}
	if net.ParseIP(host) != nil {
		return host, port, nil
	}
	if !validDNSName(host) {
		return "", "", fmt.Errorf("server %q is not a host name, an IP address, or either with :port", sanitize(s))
	}
	return host, port, nil
}

// validDNSName reports whether h is a DNS host name: labels of letters, digits and '-' (and
// '_', which some internal zones use), at most 253 bytes.
func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// resolve turns a source's answer into a route: a pool's member by hashing, or the member a
// server answer names.
func (r *Router) resolve(q Query, source string, a Answer) (Route, error) {
	rt := Route{Source: sourceLabel(source), User: q.User, Secret: a.Secret}
	if a.User != "" {
		rt.User = a.User
	}
	fail := func(format string, args ...any) (Route, error) {
		return Route{}, &loginError{kind: ErrUnavailable, msg: fmt.Sprintf("backends: route of %q from %s: ", q.User, rt.Source) + fmt.Sprintf(format, args...)}
	}
	if a.Server == "" {
		p := r.pools.Default(q.Protocol)
		if a.Pool != "" {
			if p = r.pools.Pool(q.Protocol, a.Pool); p == nil {
				return fail("pool %q is not among the %s pools", a.Pool, q.Protocol)
			}
		} else if p == nil {
			return fail("no default %s pool", q.Protocol)
		}
		m, err := p.Pick(q.User)
		if err != nil {
			return Route{}, err
		}
		rt.Pool, rt.Member, rt.Config = p, m, m.Config
		return rt, nil
	}
	host, port, _ := SplitServer(a.Server)
	for _, p := range r.pools.All() {
		if p.Protocol != q.Protocol {
			continue
		}
		if m := p.member(host, port); m != nil {
			if !m.Up() {
				return Route{}, &loginError{kind: ErrUnavailable, msg: fmt.Sprintf("backends: %s pool %q: member %s is down (route of %q from %s)", p.Protocol, p.Name, m.Config.Address, q.User, rt.Source)}
			}
			rt.Pool, rt.Member, rt.Config = p, m, m.Config
			return rt, nil
		}
	}
	p := r.pools.Default(q.Protocol)
	if p == nil || !p.allowNonMembers {
		name := ""
		if p != nil {
			name = fmt.Sprintf(" (set allow_non_members on pool %q to allow it)", p.Name)
		}
		return fail("server %s is not a member of any %s pool%s", a.Server, q.Protocol, name)
	}
	rt.Pool, rt.Config = p, p.nonMember(host, port)
	return rt, nil
}

// NewSources builds the configured sources in order. pools check the pool names of static
// maps and hash sources now, so a typo fails at start and not at a user's login.
func NewSources(cfg RoutesConfig, pools *Pools, log *slog.Logger) ([]Source, error) {
	var out []Source
	for i, sc := range cfg.Sources {
		var s Source
		var err error
		switch {
		case sc.Static != nil:
			s, err = NewStaticSource(*sc.Static, log)
		case sc.Hash != nil:
			s = hashSource{pools: pools, pool: sc.Hash.Pool}
		case sc.HTTP != nil:
			s, err = NewHTTPSource(*sc.HTTP)
		case sc.LDAP != nil:
			s, err = NewLDAPSource(*sc.LDAP)
		}
		if err != nil {
			return nil, fmt.Errorf("routes.sources[%d]: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Validate names every problem of the section.
func (c RoutesConfig) Validate() error {
	var errs []error
	for i, s := range c.Sources {
		where := fmt.Sprintf("routes.sources[%d]", i)
		n := 0
		for _, set := range []bool{s.Static != nil, s.Hash != nil, s.HTTP != nil, s.LDAP != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("%s: want exactly one of static, hash, http, ldap", where))
			continue
		}
		var err error
		switch {
		case s.Static != nil:
			err = s.Static.Validate()
		case s.Hash != nil:
			if s.Hash.Pool != "" && !validPoolName(s.Hash.Pool) {
				err = fmt.Errorf("pool: %q is not a pool name", s.Hash.Pool)
			}
		case s.HTTP != nil:
			err = s.HTTP.Validate()
		case s.LDAP != nil:
			err = s.LDAP.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if c.CacheTTL < 0 || c.Timeout < 0 || c.CacheSize < 0 {
		errs = append(errs, errors.New("routes: cache_ttl, cache_size and timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// hashSource answers every user with a pool (default: the protocol's default pool).
type hashSource struct {
	pools *Pools
	pool  string
}

func (hashSource) Name() string { return "hash" }

func (h hashSource) Lookup(_ context.Context, q Query) (Answer, bool, error) {
	if h.pool != "" {
		return Answer{Pool: h.pool}, true, nil
	}
	p := h.pools.Default(q.Protocol)
	if p == nil {
		return Answer{}, false, fmt.Errorf("no default %s pool to hash over", q.Protocol)
	}
	return Answer{Pool: p.Name}, true, nil
}

// Any returns a member of protocol's default pool that is up, for what asks any server of
// the protocol rather than a user's (SMTP's EHLO probe of the backend's extensions).
func (r *Router) Any(protocol string) (Config, error) {
	p := r.pools.Default(protocol)
	if p == nil {
		return Config{}, fmt.Errorf("backends: no default %s pool", protocol)
	}
	m, err := p.Pick("")
	if err != nil {
		return Config{}, err
	}
	return m.Config, nil
}

// Close releases the sources' connections (an LDAP source keeps one open).
func (r *Router) Close() error {
	var errs []error
	for _, s := range r.sources {
		if c, ok := s.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// sharedRoute is a route answer as the shared store keeps it. The protocol and user are kept
// too, so that an entry is only taken for the query it was made for.
type sharedRoute struct {
	V        int    `json:"v"`
	Protocol string `json:"protocol"`
	User     string `json:"user"`
	Source   string `json:"source,omitempty"` // "" when no source knew the user
	Pool     string `json:"pool,omitempty"`
	Server   string `json:"server,omitempty"`
	Backend  string `json:"backend_user,omitempty"`
	Expires  int64  `json:"expires"` // Unix seconds
}

// maxSharedRoute bounds an entry read from the shared store.
const maxSharedRoute = 2048

func sharedRouteKey(q Query) string {
	h := sha256.Sum256([]byte(q.Protocol + "\x00" + q.User))
	return "route:" + hex.EncodeToString(h[:])
}

// sharedGet reads q's answer from the shared store. Anything but a well-formed entry of ours
// for exactly q, not expired, from a known source and passing the answer check, is ignored.
func (r *Router) sharedGet(ctx context.Context, q Query) (cachedAnswer, bool) {
	if r.store == nil {
		return cachedAnswer{}, false
	}
	b, err := r.store.Get(ctx, sharedRouteKey(q))
	if err != nil || b == nil || len(b) > maxSharedRoute {
		return cachedAnswer{}, false
	}
	var e sharedRoute
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if dec.Decode(&e) != nil || e.V != 1 || e.Protocol != q.Protocol || e.User != q.User {
		return cachedAnswer{}, false
	}
	now := r.now()
	expires := time.Unix(e.Expires, 0)
	if !now.Before(expires) {
		return cachedAnswer{}, false
	}
	if limit := now.Add(r.ttl); expires.After(limit) {
		expires = limit // never longer than this replica's TTL
	}
	c := cachedAnswer{expires: expires}
	if e.Source == "" {
		if e.Pool != "" || e.Server != "" || e.Backend != "" {
			return cachedAnswer{}, false
		}
		return c, true
	}
	if !slices.ContainsFunc(r.sources, func(s Source) bool { return s.Name() == e.Source }) {
		return cachedAnswer{}, false
	}
	c.source, c.answer = e.Source, Answer{Pool: e.Pool, Server: e.Server, User: e.Backend}
	if c.answer.check() != nil {
		return cachedAnswer{}, false
	}
	return c, true
}

// sharedPut keeps c for the other replicas, unless its answer carries a secret.
func (r *Router) sharedPut(ctx context.Context, q Query, c cachedAnswer) {
	if r.store == nil || c.answer.Secret != "" {
		return
	}
	b, err := json.Marshal(sharedRoute{V: 1, Protocol: q.Protocol, User: q.User, Source: c.source,
		Pool: c.answer.Pool, Server: c.answer.Server, Backend: c.answer.User, Expires: c.expires.Unix()})
	if err != nil || len(b) > maxSharedRoute {
		return
	}
	_ = r.store.Set(ctx, sharedRouteKey(q), b, r.ttl)
}
