package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// Limits is the limits section of the configuration: connection limits applied by every
// listener on its own, and the failed-authentication delay shared by all listeners.
type Limits struct {
	// MaxConnections bounds the open connections of one listener (default 10000).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP bounds the open connections of one listener from one client
	// address, IPv6 grouped by /64 (default 256: an office behind one NAT address has many clients, each with several connections).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// AuthFailures is how many failed authentications for one user from one client address,
	// each within AuthFailureWindow of the previous, pass without delay (default 5). The user
	// is the one the client names in its SASL message, else the token's.
	AuthFailures int `yaml:"auth_failures"`
	// AuthFailuresPerAddress is how many failed authentications from one client address, for
	// all users together, pass without delay (default 20): an office behind one NAT address
	// is not held back by one user's stale client, and an address trying many users is.
	AuthFailuresPerAddress int `yaml:"auth_failures_per_address"`
	// AuthFailureWindow is how long a failure is remembered (default 10m).
	AuthFailureWindow config.Duration `yaml:"auth_failure_window"`
	// AuthDelay is the delay of the first authentication answer after AuthFailures failures;
	// it doubles with each further failure up to MaxAuthDelay (defaults 1s and 30s).
	AuthDelay    config.Duration `yaml:"auth_delay"`
	MaxAuthDelay config.Duration `yaml:"max_auth_delay"`
	// SkipAuthDelay turns the failed-authentication delay off: password-guessing style
	// attacks on tokens, and a flood of failing logins, then cost the attacker nothing.
	SkipAuthDelay bool `yaml:"skip_auth_delay"`
}

// Limit defaults.
const (
	DefaultMaxConnections      = 10000
	DefaultMaxConnectionsPerIP = 256
	DefaultAuthFailures        = 5
	DefaultAuthFailuresPerAddr = 20
	DefaultAuthFailureWindow   = 10 * time.Minute
	DefaultAuthDelay           = time.Second
	DefaultMaxAuthDelay        = 30 * time.Second
)

func (l Limits) maxConnections() int { return orInt(l.MaxConnections, DefaultMaxConnections) }
func (l Limits) maxConnectionsPerIP() int {
	return orInt(l.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Validate names every bad field.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"max_connections", l.MaxConnections}, {"max_connections_per_ip", l.MaxConnectionsPerIP}, {"auth_failures", l.AuthFailures}, {"auth_failures_per_address", l.AuthFailuresPerAddress}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("limits.%s must not be negative", f.name))
		}
	}
	for _, f := range []struct {
		name string
		d    config.Duration
	}{{"auth_failure_window", l.AuthFailureWindow}, {"auth_delay", l.AuthDelay}, {"max_auth_delay", l.MaxAuthDelay}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("limits.%s must not be negative", f.name))
		}
	}
	if l.AuthDelay.Or(DefaultAuthDelay) > l.MaxAuthDelay.Or(DefaultMaxAuthDelay) {
		errs = append(errs, fmt.Errorf("limits.auth_delay %v exceeds max_auth_delay %v", l.AuthDelay.Or(DefaultAuthDelay), l.MaxAuthDelay.Or(DefaultMaxAuthDelay)))
	}
	return errors.Join(errs...)
}

// AddrGroup is the key client addresses are counted under: the address itself for IPv4,
// its /64 for IPv6 (one customer's network, as providers assign them).
func AddrGroup(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p
}

// AuthLimiter slows down clients that keep failing to authenticate. The login pipeline
// reports every failure (a refused token, and a backend's refusal of a valid one) with the
// user the attempt was for, and waits Delay before looking at each authentication attempt:
// first for the client's address, then, once the SASL message names a user, for that user
// from that address. A success erases nothing: a client that mixes good and bad tokens must
// not reset its count with the good ones.
type AuthLimiter interface {
	// Failed records a failed authentication from ip for user ("" if none is known).
	Failed(ip netip.Addr, user string)
	// Delay is how long the next authentication answer to ip waits: with user "", for the
	// failures of ip's address group; with a user, for that user's failures from it alone.
	Delay(ip netip.Addr, user string) time.Duration
}

// FailureLimiter is the AuthLimiter of Limits. It counts failures per client address group
// (AddrGroup) and per address group and user; after AuthFailuresPerAddress failures of the
// group, or AuthFailures of one user from it, each within AuthFailureWindow of the previous,
// every further authentication answer waits AuthDelay, doubling per failure up to
// MaxAuthDelay. Failures decay with time only: a quiet AuthFailureWindow forgets them.
type FailureLimiter struct {
	perAddr, perUser int // thresholds
	window           time.Duration
	base, ceiling    time.Duration
	now              func() time.Time

	mu      sync.Mutex
	entries map[failureKey]*failures
}

// failureKey is what failures are counted under: an address group, and a user's hash
// (limiterUser) or zero for the group as a whole. The hash bounds an entry's size whatever
// name a client sends.
type failureKey struct {
	group netip.Prefix
	user  userHash
}

type userHash [16]byte

// limiterUser is the key of user: a SHA-256 prefix of the name in lower case (mailbox
// names are matched without case by most backends), the same on every replica.
func limiterUser(user string) userHash {
	var h userHash
	if user != "" {
		sum := sha256.Sum256([]byte(strings.ToLower(user)))
		copy(h[:], sum[:])
	}
	return h
}

type failures struct {
	count int
	last  time.Time
}

// maxFailureEntries bounds the limiter's memory; expired entries are swept first.
const maxFailureEntries = 100000

var _ AuthLimiter = (*FailureLimiter)(nil)

// NewFailureLimiter returns the limiter l describes, or nil when l.SkipAuthDelay. now is the
// clock (nil: time.Now).
func NewFailureLimiter(l Limits, now func() time.Time) *FailureLimiter {
	if l.SkipAuthDelay {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &FailureLimiter{
		perAddr: orInt(l.AuthFailuresPerAddress, DefaultAuthFailuresPerAddr),
		perUser: orInt(l.AuthFailures, DefaultAuthFailures),
		window:  l.AuthFailureWindow.Or(DefaultAuthFailureWindow),
		base:    l.AuthDelay.Or(DefaultAuthDelay),
		ceiling: l.MaxAuthDelay.Or(DefaultMaxAuthDelay),
		now:     now,
		entries: make(map[failureKey]*failures),
	}
}

// Failed records a failed authentication from ip for user.
func (f *FailureLimiter) Failed(ip netip.Addr, user string) {
	if f == nil || !ip.IsValid() {
		return
	}
	group, now := AddrGroup(ip), f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count(failureKey{group: group}, now)
	if user != "" {
		f.count(failureKey{group, limiterUser(user)}, now)
	}
}

func (f *FailureLimiter) count(key failureKey, now time.Time) {
	e := f.entries[key]
	if e == nil || now.Sub(e.last) > f.window {
		if len(f.entries) >= maxFailureEntries {
			f.sweep(now)
		}
		e = &failures{}
		f.entries[key] = e
	}
	e.count++
	e.last = now
}

// sweep drops expired entries, then arbitrary ones while the map is still full.
func (f *FailureLimiter) sweep(now time.Time) {
	for k, e := range f.entries {
		if now.Sub(e.last) > f.window {
			delete(f.entries, k)
		}
	}
	for k := range f.entries {
		if len(f.entries) < maxFailureEntries {
			break
		}
		delete(f.entries, k)
	}
}

// Delay is how long the next authentication answer to ip waits (AuthLimiter.Delay).
func (f *FailureLimiter) Delay(ip netip.Addr, user string) time.Duration {
	if f == nil || !ip.IsValid() {
		return 0
	}
	key := failureKey{group: AddrGroup(ip)}
	if user != "" {
		key.user = limiterUser(user)
	}
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[key]
	if e == nil || now.Sub(e.last) > f.window {
		return 0
	}
	return f.delayFor(int64(e.count), user != "")
}

// delayFor is the delay after count failures, each within the window of the previous, of a
// user from an address group (perUser) or of the group.
func (f *FailureLimiter) delayFor(count int64, perUser bool) time.Duration {
	threshold := f.perAddr
	if perUser {
		threshold = f.perUser
	}
	if count < int64(threshold) {
		return 0
	}
	d := f.base
	for i := int64(threshold); i < count && d < f.ceiling; i++ {
		d *= 2
	}
	return min(d, f.ceiling)
}

// Counters is what the shared limiter and the shared refusal memory need of a fleet-wide
// store: counters that expire ttl after their last increment. internal/shared's Store is one;
// every error means "use the local state".
type Counters interface {
	Incr(ctx context.Context, key string, ttl time.Duration) (int64, error)
	Count(ctx context.Context, key string) (int64, error)
	Delete(ctx context.Context, key string) error
}

// Refuse is the Delay of a SharedLimiter that fails closed while its store is unreachable:
// longer than any pre-authentication time, so Login.Wait answers ErrDelayed at once and the
// front end sends its temporary-failure reply (the Delayed outcome), without waiting.
const Refuse = time.Duration(math.MaxInt64)

// SharedLimiter is a FailureLimiter whose counts are shared by every replica through Store,
// so a delay earned on one replica applies on all: per address group and per address group
// and user, like the FailureLimiter it extends (the store's keys hold the user's hash, never
// the name). Every failure is also counted locally; Delay is the larger of the shared and the
// local delay, and the local one alone when the store does not answer — or Refuse when
// FailClosed.
type SharedLimiter struct {
	Local      *FailureLimiter
	Store      Counters
	FailClosed bool
}

var _ AuthLimiter = (*SharedLimiter)(nil)

// limiterKey is the store key of the failure count of ip's address group, or of user's
// failures from it.
func limiterKey(ip netip.Addr, user string) string {
	k := "fail:" + AddrGroup(ip).String()
	if user != "" {
		h := limiterUser(user)
		k += ":" + hex.EncodeToString(h[:])
	}
	return k
}

// Failed records a failed authentication from ip for user, locally and in the store.
func (s *SharedLimiter) Failed(ip netip.Addr, user string) {
	if !ip.IsValid() {
		return
	}
	s.Local.Failed(ip, user)
	// An error is the store's to count and log; the local count stands in.
	s.Store.Incr(context.Background(), limiterKey(ip, ""), s.Local.window)
	if user != "" {
		s.Store.Incr(context.Background(), limiterKey(ip, user), s.Local.window)
	}
}

// Delay is how long the next authentication answer to ip waits (AuthLimiter.Delay).
func (s *SharedLimiter) Delay(ip netip.Addr, user string) time.Duration {
	if !ip.IsValid() {
		return 0
	}
	local := s.Local.Delay(ip, user)
	n, err := s.Store.Count(context.Background(), limiterKey(ip, user))
	if err != nil {
		if s.FailClosed {
			return Refuse
		}
		return local
	}
	return max(local, s.Local.delayFor(n, user != ""))
}

// connLimiter counts one listener's open connections, in all and per AddrGroup.
type connLimiter struct {
	max, perIP int
	mu         sync.Mutex
	total      int
	byGroup    map[netip.Prefix]int
}

// acquire counts a connection from ip unless a limit is reached; which one it reports.
func (c *connLimiter) acquire(ip netip.Addr) (ok bool, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= c.max {
		return false, "max_connections"
	}
	key := AddrGroup(ip)
	if ip.IsValid() && c.byGroup[key] >= c.perIP {
		return false, "max_connections_per_ip"
	}
	c.total++
	if ip.IsValid() {
		if c.byGroup == nil {
			c.byGroup = make(map[netip.Prefix]int)
		}
		c.byGroup[key]++
	}
	return true, ""
}

func (c *connLimiter) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if ip.IsValid() {
		key := AddrGroup(ip)
		if c.byGroup[key]--; c.byGroup[key] <= 0 {
			delete(c.byGroup, key)
		}
	}
}

// logLimiter lets a refusal be logged once per address group per minute at most.
type logLimiter struct {
	mu   sync.Mutex
	last map[netip.Prefix]time.Time
}

func (l *logLimiter) allow(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := AddrGroup(ip)
	if t, ok := l.last[key]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if l.last == nil || len(l.last) >= 10000 {
		for k, t := range l.last {
			if now.Sub(t) >= time.Minute {
				delete(l.last, k)
			}
		}
		if l.last == nil || len(l.last) >= 10000 {
			l.last = make(map[netip.Prefix]time.Time)
		}
	}
	l.last[key] = now
	return true
}
