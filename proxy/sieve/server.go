package sieve

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/relay"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = proxy.ErrServerClosed

// Server serves one ManageSieve listener. Set the fields, then call Serve.
type Server struct {
	Listener  proxy.ListenerConfig
	Config    Config
	TLSConfig *tls.Config // required: implicit TLS and STARTTLS both need it
	// Login runs every authentication: the failure delay, token validation and policy, the
	// backend secret and login (proxy.Login). Required, with a Router: the default pool's
	// members are also where the backend's capabilities are learned.
	Login *proxy.Login
	// Dial logs in to the backend; nil means backends.DialSieve with the route's server.
	// (A Dial set here is not told the route's server nor the client's address.)
	Dial   func(ctx context.Context, user string, secret backends.Secret) (*backends.SieveSession, error)
	Logger *slog.Logger
	// Limits are the connection limits of this listener (zero value: the defaults).
	Limits proxy.Limits
	// Observer, if set, receives the listener's connections, sessions, authentications,
	// backend logins and relayed bytes (internal/metrics implements it).
	Observer proxy.Observer

	nextID    atomic.Uint64
	initTLS   sync.Once
	tlsConfig *tls.Config // TLSConfig asking for client certificates as Listener says
	tlsErr    error
	caps      atomic.Pointer[[]backends.SieveCapability] // the backend's, as passed on; from the last probe
	probing   sync.Once
	sessions  proxy.Tracker
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) dial(ctx context.Context, r backends.Route, secret backends.Secret, client backends.Client) (*backends.SieveSession, error) {
	if s.Dial != nil {
		return s.Dial(ctx, r.User, secret)
	}
	return backends.DialSieve(ctx, r.Config, r.User, secret, client)
}

// Serve accepts connections on ln until Shutdown or Close; it always returns a non-nil error,
// ErrServerClosed after a shutdown. The first Serve reads the backend's capabilities before
// accepting, then again every Config.CapabilitiesRefresh.
func (s *Server) Serve(ln net.Listener) error {
	switch {
	case s.TLSConfig == nil:
		return errors.New("sieve: Server.TLSConfig is required")
	case s.Login == nil || s.Login.Router == nil:
		return errors.New("sieve: Server.Login with a Router is required")
	}
	s.initTLS.Do(func() { s.tlsConfig, s.tlsErr = s.Listener.ServerTLS(s.TLSConfig) })
	if s.tlsErr != nil {
		return fmt.Errorf("sieve: %w", s.tlsErr)
	}
	if s.sessions.Closing() {
		return ErrServerClosed
	}
	s.probing.Do(func() { go s.refresh(s.probe()) })
	log := s.logger().With("listener", s.Listener.Name)
	obs := cmp.Or(s.Observer, proxy.Observer(proxy.NopObserver{}))
	accept := proxy.Accept{Listener: s.Listener, Limits: s.Limits, Refusal: `BYE (TRYLATER) "%s"` + "\r\n", TLSConfig: s.tlsConfig, Log: log, Observer: obs}
	err := s.sessions.Serve(ln, accept, func(nc net.Conn) proxy.Session { return s.newConn(nc, obs) })
	if err != nil && !errors.Is(err, ErrServerClosed) {
		return fmt.Errorf("sieve: accept: %w", err)
	}
	return err
}

// newConn is the session of an accepted connection.
func (s *Server) newConn(nc net.Conn, obs proxy.Observer) *conn {
	return &conn{
		s:        s,
		obs:      obs,
		id:       fmt.Sprintf("%s-%d", s.Listener.Name, s.nextID.Add(1)),
		raw:      nc,
		nc:       nc,
		remote:   nc.RemoteAddr().String(),
		finished: make(chan struct{}),
		client: backends.Client{
			Addr:  proxy.ClientAddrPort(nc.RemoteAddr()),
			Local: proxy.ClientAddrPort(nc.LocalAddr()),
		},
	}
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done, then closes
// those left.
func (s *Server) Shutdown(ctx context.Context) error { return s.sessions.Shutdown(ctx) }

// Close stops accepting and closes every session at once.
func (s *Server) Close() error { return s.sessions.Close() }

// probe learns the backend's capabilities and returns when to probe next.
func (s *Server) probe() time.Duration {
	cfg, err := s.Login.Router.Any(Protocol.Name)
	var caps []backends.SieveCapability
	if err == nil {
		caps, err = backends.ProbeSieve(context.Background(), cfg)
	}
	if err != nil {
		s.logger().Warn("backend capability probe failed; announcing only what saslgate itself offers",
			"listener", s.Listener.Name, "reason", err)
		return probeRetry
	}
	passed := passedCapabilities(caps)
	if old := s.caps.Swap(&passed); old == nil || !slices.Equal(*old, passed) {
		names := make([]string, len(passed))
		for i, c := range passed {
			names[i] = c.Name
		}
		s.logger().Info("backend capabilities", "listener", s.Listener.Name, "capabilities", strings.Join(names, " "))
	}
	return s.Config.CapabilitiesRefresh.Or(DefaultCapabilitiesRefresh)
}

func (s *Server) refresh(next time.Duration) {
	t := time.NewTimer(next)
	defer t.Stop()
	for {
		select {
		case <-s.sessions.Done():
			return
		case <-t.C:
			t.Reset(s.probe())
		}
	}
}

// capabilities is the capability response of a connection (RFC 5804 §1.7), its final OK
// excluded: saslgate's own IMPLEMENTATION, SASL and STARTTLS, then the backend's.
func (s *Server) capabilities(secure bool) string {
	var b strings.Builder
	line := func(name string, value ...string) {
		b.WriteString(sieveString(name))
		for _, v := range value {
			b.WriteString(" " + sieveString(v))
		}
		b.WriteString("\r\n")
	}
	line("IMPLEMENTATION", "saslgate")
	// RFC 5804 §1.7: SASL may be empty when STARTTLS is offered; OAUTHBEARER needs TLS
	// (RFC 7628 §5), so the mechanisms are announced only over it.
	if secure {
		line("SASL", "OAUTHBEARER XOAUTH2")
	} else {
		line("SASL", "")
	}
	if !secure && s.Listener.TLS == proxy.TLSStartTLS {
		line("STARTTLS")
	}
	var backend []backends.SieveCapability
	if p := s.caps.Load(); p != nil {
		backend = *p
	}
	for _, c := range backend {
		if c.HasValue {
			line(c.Name, c.Value)
		} else {
			line(c.Name)
		}
	}
	// RFC 5804 §1.7: SIEVE and VERSION are required; without the backend's (its probe failed),
	// an empty extension list claims nothing the backend may not do.
	if !hasCapability(backend, "SIEVE") {
		line("SIEVE", "")
	}
	if !hasCapability(backend, "VERSION") {
		line("VERSION", "1.0")
	}
	return b.String()
}

// ownCapabilities are the backend capabilities saslgate does not pass on: those that describe
// its own not-authenticated state (IMPLEMENTATION, SASL, STARTTLS), OWNER, which RFC 5804
// §1.7 forbids before authentication, UNAUTHENTICATE (the client would fall back into the
// backend's own login), and XCLIENT, which Dovecot offers to saslgate as a trusted proxy.
var ownCapabilities = map[string]bool{
	"IMPLEMENTATION": true, "SASL": true, "STARTTLS": true, "OWNER": true, "UNAUTHENTICATE": true, "XCLIENT": true,
}

// passedCapabilities are the backend's capabilities saslgate announces as its own.
func passedCapabilities(caps []backends.SieveCapability) []backends.SieveCapability {
	out := make([]backends.SieveCapability, 0, len(caps))
	for _, c := range caps {
		if !ownCapabilities[strings.ToUpper(c.Name)] && !hasCapability(out, c.Name) {
			out = append(out, c)
		}
	}
	return out
}

func hasCapability(caps []backends.SieveCapability, name string) bool {
	return slices.ContainsFunc(caps, func(c backends.SieveCapability) bool { return strings.EqualFold(c.Name, name) })
}

// conn is one client connection.
type conn struct {
	s      *Server
	id     string
	remote string
	client backends.Client // the client's address and the one it connected to
	log    *slog.Logger
	obs    proxy.Observer
	authed bool // logged in: which session gauge it is in

	raw net.Conn // the accepted socket
	nc  net.Conn // raw, or TLS over it
	br  *bufio.Reader
	bw  *bufio.Writer
	tls bool
	bnd proxy.Conn // what the credentials are checked against (TLS state, served certificate)
	bad int

	// plainTLS is set by the fuzz test only: the connection, plain in memory, counts as TLS
	// with this state, so each input skips a handshake that would cost more than the rest.
	plainTLS *tls.ConnectionState

	mu      sync.Mutex
	backend net.Conn       // set while spliced, closed by Abort
	spliced *relay.Session // set while spliced
	release func()         // ends the session for the Tracker

	ending   atomic.Bool   // End was called: a read timeout means shutdown
	finished chan struct{} // closed when Serve returns
}

// Abort closes the client and backend connections (proxy.Session).
func (c *conn) Abort() {
	c.mu.Lock()
	sp, be := c.spliced, c.backend
	c.mu.Unlock()
	if sp != nil {
		sp.Abort() // first: it takes parked directions back while their sockets are open
	}
	c.raw.Close()
	if be != nil {
		be.Close()
	}
}

// End ends the connection for a drain (proxy.Session): a spliced session gets a BYE at the
// next response boundary, one not yet logged in gets it at its next read; then both
// connections close. It returns within about endWait.
func (c *conn) End() {
	c.ending.Store(true)
	c.mu.Lock()
	sp := c.spliced
	c.mu.Unlock()
	if sp != nil {
		sp.End(byeShutdown)
	} else {
		t := time.NewTimer(endWait)
		defer t.Stop()
		_ = c.raw.SetReadDeadline(time.Now())
		select {
		case <-c.finished:
		case <-t.C:
		}
	}
	c.Abort()
}

// Serve runs the connection (proxy.Session). Once logged in, the session goes on in the
// splice, which ends it (c.spliceEnded); Serve returns before that.
func (c *conn) Serve(release func()) {
	c.release = release
	c.obs.SessionStarted()
	c.log = c.s.logger().With("conn", c.id, "listener", c.s.Listener.Name, "remote", c.remote)
	spliced := false
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("panic in connection; closed", "panic", v, "stack", string(debug.Stack()))
		}
		if !spliced {
			c.finish()
		}
	}()
	err := c.run()
	if errors.Is(err, errSpliced) {
		spliced = true
		return
	}
	if err != nil {
		c.log.Debug("connection ended", "reason", err)
	}
}

// finish closes everything and ends the session for the Tracker.
func (c *conn) finish() {
	c.Abort()
	c.obs.SessionEnded(c.authed)
	close(c.finished)
	c.release()
}

// spliceEnded is the end of a logged-in session.
func (c *conn) spliceEnded(up, down int64) {
	c.log.Info("session ended", "bytes_up", up, "bytes_down", down)
	c.obs.Relayed(up, down)
	c.finish()
}
