//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// authKind is how a client logs in on a path.
type authKind int

const (
	authDirect authKind = iota // LOGIN user backend-secret, straight to Dovecot
	authPass                   // LOGIN user password, nginx + auth_http
	authBearer                 // AUTHENTICATE OAUTHBEARER <JWT>, saslgate
)

// target is one way to reach the mailbox.
type target struct {
	label string
	addr  string
	auth  authKind
	proxy *proc // nil: direct to Dovecot
	plain bool  // no TLS (Dovecot's plaintext port, the proxies' own hop)
}

// open connects, logs in as u and selects INBOX.
func (w *world) open(ctx context.Context, t target, u *mailUser, bufSize int) (*imapConn, error) {
	dial := func(ctx context.Context, addr string, bufSize int) (*imapConn, error) {
		return w.dialTLS(ctx, addr, bufSize, nil)
	}
	if t.plain {
		dial = func(_ context.Context, addr string, _ int) (*imapConn, error) { return w.dialPlain(addr) }
	}
	c, err := dial(ctx, t.addr, bufSize)
	if err != nil {
		return nil, err
	}
	if err := c.auth(t.auth, u); err != nil {
		c.close()
		return nil, err
	}
	if _, err := c.cmd("SELECT INBOX"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *imapConn) auth(k authKind, u *mailUser) error {
	switch k {
	case authDirect:
		return c.login(u.name, u.secret)
	case authPass:
		return c.login(u.name, u.password)
	default:
		return c.oauthBearer(u.name, u.token)
	}
}

// snapshot is CPU and memory of everything involved at one instant.
type snapshot struct {
	at              time.Time
	proxy, backend  usage
	client, machine time.Duration
	proxyOK, backOK bool
}

func (w *world) snap(t target) snapshot {
	s := snapshot{at: time.Now(), client: selfCPU(), machine: machineCPU()}
	var err error
	if t.proxy != nil {
		s.proxy, err = groupUsage(t.proxy.pid())
		s.proxyOK = err == nil
	}
	s.backend, err = groupUsage(w.dovecot.proc.pid())
	s.backOK = err == nil
	return s
}

// cost is the CPU the processes spent between two snapshots.
type cost struct {
	wall                            time.Duration
	proxy, backend, client, machine time.Duration
}

// foreign is the share of all CPUs that processes outside the bench used
// during the measured window (other users of this machine).
func (c cost) foreign() float64 {
	other := c.machine - c.proxy - c.backend - c.client
	return max(0, other.Seconds()) / (c.wall.Seconds() * float64(runtime.NumCPU()))
}

func (c *cost) add(a, b snapshot) {
	c.wall += b.at.Sub(a.at)
	c.proxy += b.proxy.cpu - a.proxy.cpu
	c.backend += b.backend.cpu - a.backend.cpu
	c.client += b.client - a.client
	c.machine += b.machine - a.machine
}

// ---- 1. bulk FETCH ----

type bulkResult struct {
	target target
	bytes  int64
	cost   cost
	suite  string
}

// runBulk fetches the bulk mailbox (FETCH 1:* BODY.PEEK[]) over one session
// per path, passes times, the paths interleaved so drift hits all alike.
// Logins and SELECT are outside the measured window.
func (w *world) runBulk(ctx context.Context, targets []target, passes int) ([]bulkResult, error) {
	res := make([]bulkResult, len(targets))
	conns := make([]*imapConn, len(targets))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	for i, t := range targets {
		c, err := w.open(ctx, t, w.bulk, 256<<10)
		if err != nil {
			return nil, fmt.Errorf("bulk %s: %w", t.label, err)
		}
		conns[i] = c
		res[i] = bulkResult{target: t, suite: suiteName(c)}
	}
	// Warm the page cache and Dovecot's index once, untimed.
	if _, err := conns[0].cmd("FETCH 1:* BODY.PEEK[]"); err != nil {
		return nil, fmt.Errorf("bulk warm-up: %w", err)
	}
	for range passes {
		for i, t := range targets {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			a := w.snap(t)
			n, err := conns[i].cmd("FETCH 1:* BODY.PEEK[]")
			b := w.snap(t)
			if err != nil {
				return nil, fmt.Errorf("bulk %s: %w", t.label, err)
			}
			if n != w.bulkBytes {
				return nil, fmt.Errorf("bulk %s: fetched %d bytes, want %d", t.label, n, w.bulkBytes)
			}
			res[i].bytes += n
			res[i].cost.add(a, b)
		}
	}
	return res, nil
}

// ---- 2. login rate ----

type loginResult struct {
	target        target
	conc          int
	handshakeOnly bool
	resume        bool
	n, errs       int
	resumed       int // logins whose handshake resumed a session (ConnectionState().DidResume)
	firstErr      error
	cost          cost
	p50, p99      time.Duration
}

// mostlyResumed is what a resumed row must reach to stand for resumed
// logins: a server that issues no usable tickets (or one per process, of
// several) would otherwise pass full handshakes off as resumptions.
const mostlyResumed = 0.9

// resumedShare is the share of the row's logins that resumed a TLS session.
func (l loginResult) resumedShare() float64 {
	if l.n == 0 {
		return 0
	}
	return float64(l.resumed) / float64(l.n)
}

// loginCase is one row of the login table.
type loginCase struct {
	target        target
	handshakeOnly bool
	// resume: each client goroutine keeps a TLS session cache for the whole
	// run, so its every login after its first (in the untimed warm-up)
	// resumes a TLS 1.3 session, as a returning mail client's does.
	resume bool
}

// runLogins measures every case with conc clients for dur in total: cycles
// of connect, TLS handshake (full, or resumed for resume cases), greeting,
// login, LOGOUT (or, handshakeOnly, connect, handshake, greeting, close).
// The cases take turns in rounds of dur/rounds, so load from elsewhere on
// the machine falls on all of them alike. Latency runs from connect to the
// LOGOUT's tagged OK.
func (w *world) runLogins(ctx context.Context, cases []loginCase, conc int, dur time.Duration, rounds int) []loginResult {
	res := make([]loginResult, len(cases))
	lats := make([][]time.Duration, len(cases))
	clients := make([][]*tls.Config, len(cases))
	for i, c := range cases {
		res[i] = loginResult{target: c.target, conc: conc, handshakeOnly: c.handshakeOnly, resume: c.resume}
		if c.resume {
			for range conc {
				clients[i] = append(clients[i], w.resumingClient())
			}
		}
		w.loginLoop(ctx, c.target, conc, dur/20, c.handshakeOnly, clients[i], nil) // warm-up; brings the resume cases' tickets
	}
	for round := range rounds {
		for i, c := range cases {
			if ctx.Err() != nil {
				return res
			}
			progress("2/4 logins, %d client(s), round %d/%d: %s", conc, round+1, rounds, c.label())
			var r loginResult
			a := w.snap(c.target)
			lat := w.loginLoop(ctx, c.target, conc, dur/time.Duration(rounds), c.handshakeOnly, clients[i], &r)
			b := w.snap(c.target)
			res[i].cost.add(a, b)
			res[i].errs += r.errs
			res[i].resumed += r.resumed
			if res[i].firstErr == nil {
				res[i].firstErr = r.firstErr
			}
			lats[i] = append(lats[i], lat...)
		}
	}
	for i := range res {
		res[i].n = len(lats[i])
		res[i].p50, res[i].p99 = percentile(lats[i], 50), percentile(lats[i], 99)
	}
	return res
}

// label names the case's row in the progress lines and the login table.
func (c loginCase) label() string {
	return rowLabel(c.target, c.handshakeOnly, c.resume)
}

func rowLabel(t target, handshakeOnly, resume bool) string {
	switch {
	case handshakeOnly:
		return t.label + ", handshake only"
	case resume:
		return t.label + ", resumed TLS"
	}
	return t.label
}

// loginLoop runs conc client goroutines logging in to t for dur. clients,
// if not nil, holds each goroutine's TLS configuration (resumingClient);
// nil means full handshakes.
func (w *world) loginLoop(ctx context.Context, t target, conc int, dur time.Duration, handshakeOnly bool, clients []*tls.Config, r *loginResult) []time.Duration {
	var (
		mu      sync.Mutex
		all     []time.Duration
		next    atomic.Uint64
		wg      sync.WaitGroup
		errs    int
		resumed int
		first   error
	)
	end := time.Now().Add(dur)
	for i := range conc {
		var cfg *tls.Config
		if clients != nil {
			cfg = clients[i]
		}
		wg.Go(func() {
			var (
				lat []time.Duration
				res int
			)
			for time.Now().Before(end) && ctx.Err() == nil {
				u := w.users[next.Add(1)%uint64(len(w.users))]
				d, didResume, err := w.loginOnce(ctx, t, u, handshakeOnly, cfg)
				if err != nil {
					mu.Lock()
					errs++
					if first == nil {
						first = fmt.Errorf("%s: %w", t.label, err)
					}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				lat = append(lat, d)
				if didResume {
					res++
				}
			}
			mu.Lock()
			all = append(all, lat...)
			resumed += res
			mu.Unlock()
		})
	}
	wg.Wait()
	if r != nil {
		r.errs, r.firstErr, r.resumed = errs, first, resumed
	}
	return all
}

// loginOnce is one connection: it returns its latency and whether its
// handshake resumed a session.
func (w *world) loginOnce(ctx context.Context, t target, u *mailUser, handshakeOnly bool, cfg *tls.Config) (time.Duration, bool, error) {
	start := time.Now()
	c, err := w.dialTLS(ctx, t.addr, 4096, cfg)
	if err != nil {
		return 0, false, err
	}
	defer c.close()
	if handshakeOnly {
		return time.Since(start), c.tls.DidResume, nil
	}
	if err := c.auth(t.auth, u); err != nil {
		return 0, false, err
	}
	if err := c.logout(); err != nil {
		return 0, false, err
	}
	// Close at once, as mail clients do; the source addresses are spread
	// (sourceIPs) so the client-side TIME_WAITs never run out of ports.
	return time.Since(start), c.tls.DidResume, nil
}

// ---- 3. idle sessions ----

type idleResult struct {
	target            target
	n, errs           int
	firstErr          error
	setup             time.Duration
	before, after     snapshot
	proxyPerSession   float64 // bytes of RSS per session
	backendPerSession float64
}

// runIdle opens n sessions with conc parallel clients (login, SELECT INBOX,
// IDLE) and holds them; RSS is read from /proc after a warm-up (before) and
// once all sessions have idled for settle (after). whileOpen runs with the
// sessions still open (the profiling phase takes its heap profile there).
func (w *world) runIdle(ctx context.Context, t target, n, conc int, settle time.Duration, whileOpen func()) (idleResult, error) {
	r := idleResult{target: t, n: n}
	w.loginLoop(ctx, t, conc, time.Second, false, nil, nil) // warm-up: JWKS, TLS, pools
	time.Sleep(2 * time.Second)
	r.before = w.snap(t)

	conns := make([]*imapConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	var (
		next  atomic.Int64
		errs  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := w.open(ctx, t, w.users[i%int64(len(w.users))], 1024)
				if err == nil {
					if err = c.idle(); err != nil {
						c.close()
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					if errs.Add(1) > int64(n/100+10) {
						return
					}
					next.Add(-1) // retry this slot
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	r.setup = time.Since(start)
	r.errs, r.firstErr = int(errs.Load()), first
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if r.errs > n/100+10 {
		return r, fmt.Errorf("idle %s: %d failed sessions, first: %w", t.label, r.errs, first)
	}
	time.Sleep(settle)
	r.after = w.snap(t)
	if !r.before.proxyOK || !r.after.proxyOK {
		return r, errors.New("idle: proxy process not found in /proc")
	}
	r.proxyPerSession = float64(r.after.proxy.rss-r.before.proxy.rss) / float64(n)
	r.backendPerSession = float64(r.after.backend.rss-r.before.backend.rss) / float64(n)
	if whileOpen != nil {
		whileOpen()
	}
	return r, nil
}

// ---- 4. round trip per command ----

type noopResult struct {
	target        target
	n             int
	p50, p90, p99 time.Duration
}

// runNoops measures n sequential NOOP round trips per path on one selected
// session each, the paths taking turns in rounds of n/10.
func (w *world) runNoops(ctx context.Context, targets []target, n int) ([]noopResult, error) {
	conns := make([]*imapConn, len(targets))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	lat := make([][]time.Duration, len(targets))
	for i, t := range targets {
		c, err := w.open(ctx, t, w.users[0], 4096)
		if err != nil {
			return nil, fmt.Errorf("noop %s: %w", t.label, err)
		}
		conns[i] = c
		for range n / 10 { // warm-up
			if _, err := c.cmd("NOOP"); err != nil {
				return nil, fmt.Errorf("noop %s: %w", t.label, err)
			}
		}
	}
	for range 10 {
		for i, t := range targets {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			for range n / 10 {
				start := time.Now()
				if _, err := conns[i].cmd("NOOP"); err != nil {
					return nil, fmt.Errorf("noop %s: %w", t.label, err)
				}
				lat[i] = append(lat[i], time.Since(start))
			}
		}
	}
	res := make([]noopResult, len(targets))
	for i, t := range targets {
		res[i] = noopResult{target: t, n: len(lat[i]), p50: percentile(lat[i], 50), p90: percentile(lat[i], 90), p99: percentile(lat[i], 99)}
	}
	return res, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}
