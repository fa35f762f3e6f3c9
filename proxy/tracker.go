package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"
)

// ErrServerClosed is returned by a front end's Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Session is one accepted connection as a front end runs it.
type Session interface {
	// Serve runs the connection. It calls release exactly once, when the session is over;
	// a session that goes on without a goroutine of its own (an idle spliced IMAP session)
	// returns from Serve first and calls release later.
	Serve(release func())
	// Abort closes the connection at once; it is called from another goroutine.
	Abort()
	// End closes the connection the protocol's way (IMAP BYE, SMTP 421), for the end of
	// a drain; it is called from another goroutine and returns within a few seconds.
	End()
}

// Tracker runs a front end's accept loops and keeps the registry of its open
// sessions, so that Shutdown and Close behave alike for every protocol (the
// shape of net/http's and go-smtp's servers). The zero value is ready to use.
type Tracker struct {
	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[Session]struct{}
	pending   map[net.Conn]struct{} // accepted, not yet a session (PROXY header, limits)
	wg        sync.WaitGroup
	done      chan struct{} // closed when closing starts
}

// Accept is what the accept loop applies to each connection before its session starts.
type Accept struct {
	// Listener gives the PROXY protocol settings.
	Listener ListenerConfig
	// Limits gives the connection limits; each Serve call counts on its own.
	Limits Limits
	// Refusal is the protocol's answer to a connection over a limit (IMAP BYE, SMTP 421),
	// sent before it is closed (inside TLS on an implicit-TLS listener, where a client could
	// not read it in plain text): a format whose one %s is the text naming the limit
	// (refusalTexts); empty closes it without a word.
	Refusal string
	// TLSConfig is the listener's, for the refusal on an implicit-TLS listener.
	TLSConfig *tls.Config
	// Log receives refusals (once per address and minute at most) and accept errors.
	Log *slog.Logger
	// Observer counts admitted and refused connections; nil counts nothing.
	Observer Observer
}

// Serve accepts on ln until Shutdown or Close and runs each connection's
// session, made by newSession, on its own goroutine. Before that, on that
// goroutine, it reads the PROXY header when the listener expects one (the
// connection's RemoteAddr is then the client's) and applies the connection
// limits. It returns ErrServerClosed after a shutdown, or the accept error that
// stopped it.
func (t *Tracker) Serve(ln net.Listener, a Accept, newSession func(net.Conn) Session) error {
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	trusted, err := a.Listener.trustedNetworks()
	if err != nil {
		return err
	}
	g := &gate{
		a: a, log: log, trusted: trusted,
		limits: &connLimiter{max: a.Limits.maxConnections(), perIP: a.Limits.maxConnectionsPerIP()},
		logged: &logLimiter{},
	}
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return ErrServerClosed
	}
	t.init()
	t.listeners[ln] = struct{}{}
	t.mu.Unlock()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if t.Closing() {
				return ErrServerClosed
			}
			if retryableAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; backing off", "reason", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !t.start(nc, g, newSession) {
			nc.Close()
			return ErrServerClosed
		}
	}
}

// gate is one Serve call's admission: PROXY header and connection limits.
type gate struct {
	a       Accept
	log     *slog.Logger
	trusted []netip.Prefix
	limits  *connLimiter
	logged  *logLimiter
}

// admit prepares an accepted connection: its PROXY header read, if expected, and a place
// within the limits. It returns nil when the connection was refused, and closes it then;
// release gives back the place.
func (g *gate) admit(nc net.Conn) (conn net.Conn, release func()) {
	if g.a.Listener.ProxyProtocol {
		peer := ClientAddr(nc.RemoteAddr())
		if !slices.ContainsFunc(g.trusted, func(p netip.Prefix) bool { return p.Contains(peer) }) {
			if g.logged.allow(peer, time.Now()) {
				g.log.Warn("connection refused: PROXY protocol peer not in proxy_trusted_networks", "remote", peer.String())
			}
			g.a.refused("proxy_untrusted")
			nc.Close()
			return nil, nil
		}
		pc, err := acceptProxy(nc)
		if err != nil {
			g.log.Info("connection closed: PROXY protocol header", "remote", nc.RemoteAddr().String(), "reason", err)
			g.a.refused("proxy_header")
			nc.Close()
			return nil, nil
		}
		nc = pc
	}
	ip := ClientAddr(nc.RemoteAddr())
	if ok, limit := g.limits.acquire(ip); !ok {
		if g.logged.allow(ip, time.Now()) {
			g.log.Warn("connection refused: limit reached", "remote", ip.String(), "limit", limit)
		}
		g.a.refused(limit)
		if g.a.Refusal != "" {
			_ = nc.SetDeadline(time.Now().Add(refuseTimeout))
			g.refuse(nc, limit)
		}
		nc.Close()
		return nil, nil
	}
	if g.a.Observer != nil {
		g.a.Observer.Accepted()
	}
	return nc, func() { g.limits.release(ip) }
}

// refuse sends the refusal for limit, inside TLS on an implicit-TLS listener.
func (g *gate) refuse(nc net.Conn, limit string) {
	if g.a.Listener.TLS == TLSImplicit {
		tc := tls.Server(nc, g.a.TLSConfig)
		if tc.Handshake() != nil {
			return
		}
		nc = tc
	}
	_, _ = fmt.Fprintf(nc, g.a.Refusal, refusalTexts[limit])
}

// refusalTexts say which connection limit a refused client hit: the address's own, which it
// can do something about, or the server's.
var refusalTexts = map[string]string{
	"max_connections":        "Too many connections to this server, try again later",
	"max_connections_per_ip": "Too many connections from your address",
}

// refuseTimeout bounds the refusal of a connection over a limit (TLS handshake included).
const refuseTimeout = 5 * time.Second

func (t *Tracker) init() {
	if t.listeners == nil {
		t.listeners = make(map[net.Listener]struct{})
		t.sessions = make(map[Session]struct{})
		t.pending = make(map[net.Conn]struct{})
		t.done = make(chan struct{})
	}
}

func (t *Tracker) start(nc net.Conn, g *gate, newSession func(net.Conn) Session) bool {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return false
	}
	t.pending[nc] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		conn, release := g.admit(nc)
		t.mu.Lock()
		delete(t.pending, nc)
		if conn == nil {
			t.mu.Unlock()
			t.wg.Done()
			return
		}
		if t.closing {
			t.mu.Unlock()
			conn.Close()
			release()
			t.wg.Done()
			return
		}
		s := newSession(conn)
		t.sessions[s] = struct{}{}
		t.mu.Unlock()
		s.Serve(sync.OnceFunc(func() {
			t.mu.Lock()
			delete(t.sessions, s)
			t.mu.Unlock()
			release()
			t.wg.Done()
		}))
	}()
	return true
}

// retryableAccept reports accept errors that pass (out of descriptors, a
// connection reset before accept), so the loop backs off instead of exiting.
func retryableAccept(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// Closing reports whether Shutdown or Close has begun.
func (t *Tracker) Closing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closing
}

// Done is closed once Shutdown or Close begins, for a front end's background work.
func (t *Tracker) Done() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.init()
	return t.done
}

// Shutdown stops accepting and waits for open sessions to end until ctx is
// done, then ends those left (Session.End), aborting any still open after
// endTimeout. It returns ctx's error when sessions had to be ended.
func (t *Tracker) Shutdown(ctx context.Context) error {
	t.closeListeners()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		t.endAll()
		select {
		case <-done:
		case <-time.After(endTimeout):
			t.abortAll()
			<-done
		}
		return ctx.Err()
	}
}

// endTimeout bounds the sessions' End at the end of a drain; those left are aborted.
const endTimeout = 5 * time.Second

// endAll ends every session the protocol's way, all at once, and closes connections that
// are not sessions yet.
func (t *Tracker) endAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s := range t.sessions {
		go s.End()
	}
	for nc := range t.pending {
		nc.Close()
	}
}

// Close stops accepting and aborts every session at once.
func (t *Tracker) Close() error {
	t.closeListeners()
	t.abortAll()
	t.wg.Wait()
	return nil
}

func (t *Tracker) closeListeners() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.init()
	if !t.closing {
		t.closing = true
		close(t.done)
	}
	for ln := range t.listeners {
		ln.Close()
	}
}

func (t *Tracker) abortAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s := range t.sessions {
		s.Abort()
	}
	for nc := range t.pending {
		nc.Close()
	}
}

func (a *Accept) refused(reason string) {
	if a.Observer != nil {
		a.Observer.Refused(reason)
	}
}
