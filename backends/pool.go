package backends

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// PoolConfig is one named pool of backend servers of one protocol: members that hold the same
// mailboxes (or one member each, for a shard), how saslgate logs in to them, and how their
// health is checked. Pools are named per protocol: an "imap" pool and an "smtp" pool may share
// a name, so that one route answer ("shard1") serves both doors.
type PoolConfig struct {
	// Name names the pool in routes and in each protocol section's "pool:": letters, digits,
	// '-' and '_' (never '.' or ':', which make an answer a server address).
	Name string `yaml:"name"`
	// Protocol is the protocol the members speak: a registered protocol's name (imap, smtp…).
	Protocol string `yaml:"protocol"`
	// Config holds what every member shares: tls, server_name, ca_file, insecure_skip_verify
	// (which a member may override), the login mode and its keys, hostname,
	// forward_client_address and timeout. Its address must be empty: members have addresses.
	Config `yaml:",inline"`
	// Members are the pool's servers; at least one.
	Members []MemberConfig `yaml:"members"`
	// HealthCheck reads each member's greeting at an interval.
	HealthCheck HealthConfig `yaml:"health_check"`
	// AllowNonMembers lets a route answer name a server that is not a member of any pool of
	// the protocol; it is then dialled with this pool's settings. Off by default: a route
	// source (a map file, an HTTP responder, an LDAP attribute) then cannot send users' logins
	// to a host nobody listed here.
	AllowNonMembers bool `yaml:"allow_non_members"`
}

// MemberConfig is one server of a pool; the TLS fields left empty take the pool's.
type MemberConfig struct {
	Address            string `yaml:"address"`
	TLS                string `yaml:"tls"`
	ServerName         string `yaml:"server_name"`
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify *bool  `yaml:"insecure_skip_verify"`
}

// HealthConfig is a pool's health check: each member's greeting is read every Interval; Fall
// failures in a row mark the member down, Rise successes in a row mark it up again.
type HealthConfig struct {
	// Disabled turns the checks off: every member is always up, and a member that fails shows
	// only in the logins that fail.
	Disabled bool            `yaml:"disabled"`
	Interval config.Duration `yaml:"interval"` // default 10s
	Timeout  config.Duration `yaml:"timeout"`  // bounds one check; default 5s
	Fall     int             `yaml:"fall"`     // default 3
	Rise     int             `yaml:"rise"`     // default 2
}

// Health check defaults.
const (
	DefaultHealthInterval = 10 * time.Second
	DefaultHealthTimeout  = 5 * time.Second
	DefaultHealthFall     = 3
	DefaultHealthRise     = 2
)

// Member returns the full backend configuration of member m: the pool's, with m's fields.
func (p PoolConfig) Member(m MemberConfig) Config {
	c := p.Config
	c.Address = m.Address
	c.TLS = cmp.Or(m.TLS, c.TLS)
	c.ServerName = cmp.Or(m.ServerName, c.ServerName)
	c.CAFile = cmp.Or(m.CAFile, c.CAFile)
	if m.InsecureSkipVerify != nil {
		c.InsecureSkipVerify = *m.InsecureSkipVerify
	}
	return c
}

// validPoolName reports whether s can name a pool.
func validPoolName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Validate names every problem of the pool, prefixed with where ("pools[0]").
func (p PoolConfig) Validate(where string) error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(where+": "+format, args...))
	}
	if !validPoolName(p.Name) {
		add("name: %q: want 1 to 64 letters, digits, '-' or '_'", p.Name)
	}
	if p.Protocol == "" {
		add("protocol: required")
	}
	if p.Address != "" {
		add("address: a pool has members; write members: [{address: %s}]", p.Address)
	}
	if len(p.Members) == 0 {
		add("members: at least one is required")
	}
	seen := map[string]bool{}
	for i, m := range p.Members {
		if err := p.Member(m).Validate(); err != nil {
			add("members[%d]: %w", i, err)
		}
		if seen[m.Address] {
			add("members[%d]: address %s is listed twice", i, m.Address)
		}
		seen[m.Address] = true
	}
	if p.Protocol != "smtp" && p.Login == LoginXClient {
		add(`login: "xclient" is for SMTP pools`)
	}
	h := p.HealthCheck
	if h.Interval < 0 || h.Timeout < 0 || h.Fall < 0 || h.Rise < 0 {
		add("health_check: interval, timeout, fall and rise must not be negative")
	}
	return errors.Join(errs...)
}

// Member is one server of a running pool.
type Member struct {
	// Config is the member's full backend configuration.
	Config Config
	pool   *Pool
	up     atomic.Bool
	// health-check counters, touched only by the check's goroutine
	fails, rises int
}

// Up reports whether the member passes its health checks.
func (m *Member) Up() bool { return m.up.Load() }

// Pool is the pool the member belongs to.
func (m *Member) Pool() *Pool { return m.pool }

// Address is the member's host:port.
func (m *Member) Address() string { return m.Config.Address }

// Pool is a running pool: its members and their health.
type Pool struct {
	Name, Protocol  string
	Members         []*Member
	allowNonMembers bool
	base            Config // the pool's shared settings, for a non-member a route names
	health          HealthConfig
}

// Healthy returns the members that are up.
func (p *Pool) Healthy() []*Member {
	var up []*Member
	for _, m := range p.Members {
		if m.Up() {
			up = append(up, m)
		}
	}
	return up
}

// Pick chooses user's member by rendezvous hashing over the healthy members: the same user
// lands on the same member while it is up (on every replica: the hash is fixed, not seeded);
// when it goes down only its users move, each to the member that scores next, and they come
// back when it returns. It fails with ErrUnavailable when no member is up.
func (p *Pool) Pick(user string) (*Member, error) {
	var best *Member
	var bestScore uint64
	for _, m := range p.Members {
		if !m.Up() {
			continue
		}
		if s := rendezvous(user, m.Config.Address); best == nil || s > bestScore {
			best, bestScore = m, s
		}
	}
	if best == nil {
		return nil, &loginError{kind: ErrUnavailable, msg: fmt.Sprintf("backends: %s pool %q: no member is up", p.Protocol, p.Name)}
	}
	return best, nil
}

// rendezvous is the score of member for user: FNV-1a 64 of both, mixed by SplitMix64's
// finalizer so that members whose addresses differ in one byte still score independently.
func rendezvous(user, member string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(user); i++ {
		h = (h ^ uint64(user[i])) * prime
	}
	h *= prime // a NUL between the two: ("ab", "c") and ("a", "bc") differ
	for i := 0; i < len(member); i++ {
		h = (h ^ uint64(member[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// member finds the member at host (and port, when given), case-insensitively on the host.
func (p *Pool) member(host, port string) *Member {
	for _, m := range p.Members {
		h, pt, _ := net.SplitHostPort(m.Config.Address)
		if strings.EqualFold(h, host) && (port == "" || pt == port) {
			return m
		}
	}
	return nil
}

// nonMember is the configuration of a server a route named that no pool lists: the pool's
// settings, at host:port (port "" takes the port of the pool's first member).
func (p *Pool) nonMember(host, port string) Config {
	c := p.base
	if port == "" {
		_, port, _ = net.SplitHostPort(p.Members[0].Config.Address)
	}
	c.Address = net.JoinHostPort(host, port)
	if c.ServerName == "" {
		c.ServerName = host
	}
	return c
}

// Pools are the running pools, by protocol and name, and each protocol's default pool.
type Pools struct {
	pools    map[poolKey]*Pool
	defaults map[string]*Pool
	all      []*Pool
}

type poolKey struct{ protocol, name string }

// PoolObserver receives member health changes (internal/metrics implements it).
type PoolObserver interface {
	MemberHealth(protocol, pool, member string, up bool)
}

// NewPools builds pools from their (validated) configurations; defaults maps each protocol to
// the name of its default pool, which must exist. Every member starts up; Start runs the
// health checks.
func NewPools(cfgs []PoolConfig, defaults map[string]string) (*Pools, error) {
	ps := &Pools{pools: map[poolKey]*Pool{}, defaults: map[string]*Pool{}}
	for _, pc := range cfgs {
		k := poolKey{pc.Protocol, pc.Name}
		if ps.pools[k] != nil {
			return nil, fmt.Errorf("backends: %s pool %q is defined twice", pc.Protocol, pc.Name)
		}
		p := &Pool{Name: pc.Name, Protocol: pc.Protocol, allowNonMembers: pc.AllowNonMembers, base: pc.Config, health: pc.HealthCheck}
		for _, mc := range pc.Members {
			m := &Member{Config: pc.Member(mc), pool: p}
			m.up.Store(true)
			p.Members = append(p.Members, m)
		}
		ps.pools[k] = p
		ps.all = append(ps.all, p)
	}
	for proto, name := range defaults {
		p := ps.pools[poolKey{proto, name}]
		if p == nil {
			return nil, fmt.Errorf("backends: %s: default pool %q is not among the %s pools", proto, name, proto)
		}
		ps.defaults[proto] = p
	}
	return ps, nil
}

// Pool returns protocol's pool called name, or nil.
func (ps *Pools) Pool(protocol, name string) *Pool { return ps.pools[poolKey{protocol, name}] }

// Default returns protocol's default pool, or nil.
func (ps *Pools) Default(protocol string) *Pool { return ps.defaults[protocol] }

// All returns every pool, in configuration order.
func (ps *Pools) All() []*Pool { return ps.all }

// Start runs the health checks of every pool that has them until ctx is done: each member is
// checked at once, then every interval. obs, if not nil, is told each member's state now and at
// every change.
func (ps *Pools) Start(ctx context.Context, log *slog.Logger, obs PoolObserver) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range ps.all {
		for _, m := range p.Members {
			if obs != nil {
				obs.MemberHealth(p.Protocol, p.Name, m.Config.Address, m.Up())
			}
			if !p.health.Disabled {
				go m.watch(ctx, log, obs)
			}
		}
	}
}

// watch checks m's health until ctx is done.
func (m *Member) watch(ctx context.Context, log *slog.Logger, obs PoolObserver) {
	h := m.pool.health
	interval := h.Interval.Or(DefaultHealthInterval)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, h.Timeout.Or(DefaultHealthTimeout))
		err := CheckGreeting(cctx, m.pool.Protocol, m.Config)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if changed := m.record(err); changed {
			p := m.pool
			if m.Up() {
				log.Info("backend member up", "protocol", p.Protocol, "pool", p.Name, "member", m.Config.Address)
			} else {
				log.Warn("backend member down", "protocol", p.Protocol, "pool", p.Name, "member", m.Config.Address, "reason", err)
			}
			if obs != nil {
				obs.MemberHealth(p.Protocol, p.Name, m.Config.Address, m.Up())
			}
		}
		t.Reset(interval)
	}
}

// record counts one check's result and reports whether it changed the member's state.
func (m *Member) record(err error) bool {
	h := m.pool.health
	if err == nil {
		m.fails = 0
		if m.Up() {
			return false
		}
		if m.rises++; m.rises >= cmp.Or(h.Rise, DefaultHealthRise) {
			m.rises = 0
			m.up.Store(true)
			return true
		}
		return false
	}
	m.rises = 0
	if !m.Up() {
		return false
	}
	if m.fails++; m.fails >= cmp.Or(h.Fall, DefaultHealthFall) {
		m.fails = 0
		m.up.Store(false)
		return true
	}
	return false
}

// SetUp marks m up or down, as a health check would (for tests and tools).
func (m *Member) SetUp(up bool) { m.up.Store(up) }

// Ready reports an error naming each pool that has no member up (/readyz).
func (ps *Pools) Ready(context.Context) error {
	var down []string
	for _, p := range ps.all {
		if len(p.Healthy()) == 0 {
			down = append(down, fmt.Sprintf("%s pool %q", p.Protocol, p.Name))
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("no member up in %s", strings.Join(down, ", "))
	}
	return nil
}

// HealthChecked reports whether the pool's members are health-checked.
func (p *Pool) HealthChecked() bool { return !p.health.Disabled }

// CheckOnce checks every health-checked member's greeting once, in parallel, and sets its
// state from that one check (for tools: `saslgate route`).
func (ps *Pools) CheckOnce(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range ps.all {
		if p.health.Disabled {
			continue
		}
		for _, m := range p.Members {
			wg.Go(func() { m.up.Store(CheckGreeting(ctx, p.Protocol, m.Config) == nil) })
		}
	}
	wg.Wait()
}
