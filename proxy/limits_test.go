package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
)

func TestFailureLimiterDelay(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := NewFailureLimiter(Limits{
		AuthFailuresPerAddress: 3, AuthFailureWindow: config.Duration(time.Minute),
		AuthDelay: config.Duration(time.Second), MaxAuthDelay: config.Duration(5 * time.Second),
	}, func() time.Time { return now })
	bad, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	var got []time.Duration
	for range 7 {
		got = append(got, f.Delay(bad, ""))
		f.Failed(bad, "")
		now = now.Add(10 * time.Second)
	}
	want := []time.Duration{0, 0, 0, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays before each failure = %v, want %v", got, want)
		}
	}
	if d := f.Delay(other, ""); d != 0 {
		t.Errorf("another address is delayed %v", d)
	}
	// IPv4-mapped IPv6 is the same client.
	if d := f.Delay(netip.MustParseAddr("::ffff:192.0.2.1"), ""); d != 5*time.Second {
		t.Errorf("mapped address delay = %v, want 5s", d)
	}
	// A quiet window forgets the failures.
	now = now.Add(61 * time.Second)
	if d := f.Delay(bad, ""); d != 0 {
		t.Errorf("after a quiet window the delay is %v, want 0", d)
	}
}

// IPv6 clients are grouped by /64: rotating through a /64 does not escape the delay.
func TestFailureLimiterIPv6Group(t *testing.T) {
	f := NewFailureLimiter(Limits{AuthFailuresPerAddress: 1}, nil)
	f.Failed(netip.MustParseAddr("2001:db8:1:2::1"), "")
	f.Failed(netip.MustParseAddr("2001:db8:1:2:ffff::9"), "")
	if d := f.Delay(netip.MustParseAddr("2001:db8:1:2::77"), ""); d != 2*DefaultAuthDelay {
		t.Errorf("same /64 delay = %v, want %v", d, 2*DefaultAuthDelay)
	}
	if d := f.Delay(netip.MustParseAddr("2001:db8:1:3::1"), ""); d != 0 {
		t.Errorf("next /64 delay = %v, want 0", d)
	}
}

func TestFailureLimiterOff(t *testing.T) {
	if f := NewFailureLimiter(Limits{SkipAuthDelay: true}, nil); f != nil {
		t.Fatal("skip_auth_delay still returns a limiter")
	}
	var f *FailureLimiter // the nil limiter is usable and never delays
	f.Failed(netip.MustParseAddr("192.0.2.1"), "")
	if d := f.Delay(netip.MustParseAddr("192.0.2.1"), ""); d != 0 {
		t.Errorf("nil limiter delay %v", d)
	}
}

func TestConnLimiter(t *testing.T) {
	c := &connLimiter{max: 3, perIP: 2}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i, step := range []struct {
		ip     netip.Addr
		ok     bool
		reason string
	}{{a, true, ""}, {a, true, ""}, {a, false, "max_connections_per_ip"}, {b, true, ""}, {b, false, "max_connections"}} {
		if ok, reason := c.acquire(step.ip); ok != step.ok || reason != step.reason {
			t.Fatalf("step %d: acquire(%v) = %v %q, want %v %q", i, step.ip, ok, reason, step.ok, step.reason)
		}
	}
	c.release(a)
	if ok, _ := c.acquire(a); !ok {
		t.Error("no place after a release")
	}
	c.release(a)
	c.release(a)
	c.release(b)
	if c.total != 0 || len(c.byGroup) != 0 {
		t.Errorf("after releasing all: total %d, groups %v", c.total, c.byGroup)
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := (Limits{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	err := Limits{MaxConnections: -1, AuthDelay: config.Duration(time.Minute)}.Validate()
	for _, want := range []string{"limits.max_connections must not be negative", "limits.auth_delay 1m0s exceeds max_auth_delay 30s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestListenerProxyProtocolValidate(t *testing.T) {
	base := ListenerConfig{Name: "imaps", Protocol: "imap", Address: ":993", TLS: TLSImplicit}
	for _, tc := range []struct {
		proxy   bool
		trusted []string
		want    string
	}{
		{true, nil, "proxy_trusted_networks is required"},
		{false, []string{"10.0.0.0/8"}, "only used with proxy_protocol"},
		{true, []string{"10.0.0.0/33"}, `"10.0.0.0/33" is not a CIDR network`},
		{true, []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"}, ""},
	} {
		l := base
		l.ProxyProtocol, l.ProxyTrustedNetworks = tc.proxy, tc.trusted
		err := l.Validate("listeners[0]")
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("proxy %v trusted %v: err = %v, want %q", tc.proxy, tc.trusted, err, tc.want)
		}
	}
}

// limiterAddr is the i-th of up to 2^24 distinct IPv4 clients, each its own AddrGroup.
func limiterAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// When the limiter is full, a new client's failure sweeps out the entries older than the
// window and keeps the rest: an entry exactly one window old still delays (see Delay), so it
// stays, one a nanosecond older goes.
func TestFailureLimiterSweepExpired(t *testing.T) {
	const window = time.Minute
	start := time.Unix(1_700_000_000, 0)
	now := start
	f := NewFailureLimiter(Limits{AuthFailuresPerAddress: 1, AuthFailureWindow: config.Duration(window)}, func() time.Time { return now })

	// Half the entries fail at start, one a nanosecond later, the rest 30s later.
	const expired = maxFailureEntries / 2
	for i := range expired {
		f.Failed(limiterAddr(i), "")
	}
	now = start.Add(time.Nanosecond)
	edge := limiterAddr(expired)
	f.Failed(edge, "")
	now = start.Add(30 * time.Second)
	for i := expired + 1; i < maxFailureEntries; i++ {
		f.Failed(limiterAddr(i), "")
	}
	if len(f.entries) != maxFailureEntries {
		t.Fatalf("limiter holds %d entries before the sweep, want it full (%d)", len(f.entries), maxFailureEntries)
	}

	now = start.Add(window + time.Nanosecond) // the first half is now one nanosecond too old
	newcomer := limiterAddr(maxFailureEntries)
	f.Failed(newcomer, "")

	if want := maxFailureEntries - expired + 1; len(f.entries) != want {
		t.Errorf("after the sweep the limiter holds %d entries, want %d (live ones and the newcomer)", len(f.entries), want)
	}
	for i := range expired {
		if _, ok := f.entries[failureKey{group: AddrGroup(limiterAddr(i))}]; ok {
			t.Fatalf("expired entry %v was kept", limiterAddr(i))
		}
	}
	for i := expired; i < maxFailureEntries; i++ {
		if e := f.entries[failureKey{group: AddrGroup(limiterAddr(i))}]; e == nil || e.count != 1 {
			t.Fatalf("live entry %v = %+v after the sweep, want its one failure", limiterAddr(i), e)
		}
	}
	for _, ip := range []netip.Addr{edge, newcomer, limiterAddr(maxFailureEntries - 1)} {
		if d := f.Delay(ip, ""); d != DefaultAuthDelay {
			t.Errorf("Delay(%v) = %v after the sweep, want %v", ip, d, DefaultAuthDelay)
		}
	}
}

// When every entry is live, the sweep evicts arbitrary ones so that the limiter stays within
// maxFailureEntries and the newcomer is still counted.
func TestFailureLimiterSweepFull(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := NewFailureLimiter(Limits{AuthFailuresPerAddress: 1}, func() time.Time { return now })
	for i := range maxFailureEntries {
		f.Failed(limiterAddr(i), "")
	}
	newcomer := limiterAddr(maxFailureEntries)
	f.Failed(newcomer, "")
	if len(f.entries) != maxFailureEntries {
		t.Errorf("limiter holds %d entries, want %d: full, not over", len(f.entries), maxFailureEntries)
	}
	if e := f.entries[failureKey{group: AddrGroup(newcomer)}]; e == nil || e.count != 1 {
		t.Errorf("newcomer's entry = %+v, want its one failure", e)
	}
	if d := f.Delay(newcomer, ""); d != DefaultAuthDelay {
		t.Errorf("Delay(newcomer) = %v, want %v", d, DefaultAuthDelay)
	}
}

// fakeCounters is an in-memory Counters, shared by the Logins and limiters of one test as a
// store is by replicas; down makes every call fail.
type fakeCounters struct {
	mu   sync.Mutex
	m    map[string]int64
	down bool
	now  *time.Time
	exp  map[string]time.Time
}

func newFakeCounters(now *time.Time) *fakeCounters {
	return &fakeCounters{m: map[string]int64{}, exp: map[string]time.Time{}, now: now}
}

var errFakeDown = errors.New("fake store down")

func (f *fakeCounters) Incr(_ context.Context, key string, ttl time.Duration) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return 0, errFakeDown
	}
	if !f.now.Before(f.exp[key]) {
		f.m[key] = 0
	}
	f.m[key]++
	f.exp[key] = f.now.Add(ttl)
	return f.m[key], nil
}

func (f *fakeCounters) Count(_ context.Context, key string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return 0, errFakeDown
	}
	if !f.now.Before(f.exp[key]) {
		return 0, nil
	}
	return f.m[key], nil
}

func (f *fakeCounters) Delete(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errFakeDown
	}
	delete(f.m, key)
	delete(f.exp, key)
	return nil
}

// Two replicas' SharedLimiters on one store: failures on A delay B; with the store down each
// counts alone (fail open), or refuses at once (fail closed).
func TestSharedLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	limits := Limits{
		AuthFailuresPerAddress: 3, AuthFailureWindow: config.Duration(time.Minute),
		AuthDelay: config.Duration(time.Second), MaxAuthDelay: config.Duration(5 * time.Second),
	}
	store := newFakeCounters(&now)
	a := &SharedLimiter{Local: NewFailureLimiter(limits, clock), Store: store}
	b := &SharedLimiter{Local: NewFailureLimiter(limits, clock), Store: store}
	ip := netip.MustParseAddr("2001:db8::1")
	for range 4 {
		a.Failed(ip, "")
	}
	if d := b.Delay(netip.MustParseAddr("2001:db8::2"), ""); d != 2*time.Second {
		t.Errorf("B's delay after 4 failures on A (same /64) = %v, want 2s", d)
	}
	if d := b.Delay(netip.MustParseAddr("192.0.2.1"), ""); d != 0 {
		t.Errorf("another address is delayed %v", d)
	}
	// The shared count decays like the local one.
	now = now.Add(61 * time.Second)
	if d := b.Delay(ip, ""); d != 0 {
		t.Errorf("after a quiet window B's delay = %v, want 0", d)
	}

	store.down = true
	for range 3 {
		a.Failed(ip, "")
	}
	if d := a.Delay(ip, ""); d != time.Second {
		t.Errorf("store down: A's own delay = %v, want 1s (local count)", d)
	}
	if d := b.Delay(ip, ""); d != 0 {
		t.Errorf("store down: B's delay = %v, want 0 (fail open: local only)", d)
	}
	closed := &SharedLimiter{Local: NewFailureLimiter(limits, clock), Store: store, FailClosed: true}
	if d := closed.Delay(ip, ""); d != Refuse {
		t.Errorf("store down, fail closed: delay = %v, want Refuse", d)
	}
	// Refuse makes Login.Wait answer ErrDelayed at once, not wait.
	l := &Login{Limiter: closed}
	start := time.Now()
	err := l.Wait(&Attempt{Client: backends.Client{Addr: netip.AddrPortFrom(ip, 1)}}, time.Now().Add(time.Hour), nil)
	if !errors.Is(err, ErrDelayed) || time.Since(start) > time.Second {
		t.Errorf("Wait with the store down and fail closed = %v after %v, want ErrDelayed at once", err, time.Since(start))
	}
	store.down = false
	if d := closed.Delay(ip, ""); d != 0 {
		t.Errorf("store back, fail closed: delay = %v, want 0", d)
	}
}

// A store value that is not a counter is not trusted: the local count stands.
func TestSharedLimiterStoreError(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	store := newFakeCounters(&now)
	store.down = true
	l := &SharedLimiter{Local: NewFailureLimiter(Limits{AuthFailuresPerAddress: 1}, func() time.Time { return now }), Store: store}
	ip := netip.MustParseAddr("192.0.2.9")
	l.Failed(ip, "")
	if d := l.Delay(ip, ""); d != DefaultAuthDelay {
		t.Errorf("delay = %v, want the local %v", d, DefaultAuthDelay)
	}
}

// Failures count per address group and per address group and user: one user's failures
// delay that user from that address (whatever the case of the name), not a colleague behind
// the same address, nor the user from elsewhere; the group's own count has its own threshold.
func TestFailureLimiterPerUser(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := NewFailureLimiter(Limits{AuthFailures: 2, AuthFailuresPerAddress: 4}, func() time.Time { return now })
	office, home := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	f.Failed(office, "alice@example.com")
	f.Failed(office, "Alice@Example.COM")
	for _, c := range []struct {
		ip   netip.Addr
		user string
		want time.Duration
	}{
		{office, "alice@example.com", DefaultAuthDelay},
		{office, "ALICE@example.com", DefaultAuthDelay},
		{office, "bob@example.com", 0},
		{office, "", 0}, // 2 of the group's 4
		{home, "alice@example.com", 0},
	} {
		if d := f.Delay(c.ip, c.user); d != c.want {
			t.Errorf("Delay(%v, %q) = %v, want %v", c.ip, c.user, d, c.want)
		}
	}
	f.Failed(office, "carol@example.com")
	f.Failed(office, "")
	if d := f.Delay(office, ""); d != DefaultAuthDelay {
		t.Errorf("after 4 failures of the office's users its delay is %v, want %v", d, DefaultAuthDelay)
	}
}

// The shared limiter shares both counts; its keys hold a hash of the user, not the name.
func TestSharedLimiterPerUser(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	limits := Limits{AuthFailures: 2, AuthFailuresPerAddress: 10}
	store := newFakeCounters(&now)
	a := &SharedLimiter{Local: NewFailureLimiter(limits, clock), Store: store}
	b := &SharedLimiter{Local: NewFailureLimiter(limits, clock), Store: store}
	ip := netip.MustParseAddr("192.0.2.44")
	a.Failed(ip, "alice@example.com")
	a.Failed(ip, "alice@example.com")
	if d := b.Delay(ip, "alice@example.com"); d != DefaultAuthDelay {
		t.Errorf("B's delay for alice after 2 of her failures on A = %v, want %v", d, DefaultAuthDelay)
	}
	if d := b.Delay(ip, "bob@example.com"); d != 0 {
		t.Errorf("B delays bob %v", d)
	}
	if n := store.m["fail:192.0.2.44/32"]; n != 2 {
		t.Errorf("the address's shared count is %d, want 2", n)
	}
	for k := range store.m {
		if strings.Contains(k, "alice") {
			t.Errorf("store key %q holds the user's name", k)
		}
	}
}
