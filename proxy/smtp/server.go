package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/frontend"
	"github.com/saslgate/saslgate/tls/binding"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = proxy.ErrServerClosed

// Server serves one SMTP submission listener. Set the fields, then call Serve.
type Server struct {
	// Listener is the socket's configuration: its TLS mode, and the public name and port
	// OAUTHBEARER host= and port= must match.
	Listener proxy.ListenerConfig
	// Config is the SMTP section of the configuration.
	Config Config
	// TLSConfig is required: implicit TLS and STARTTLS both need it.
	TLSConfig *tls.Config
	// Login runs every authentication: the failure delay, token validation and policy, the
	// backend secret (not with backend login "xclient") and login (proxy.Login). Required.
	Login *proxy.Login
	// Dial logs in to the backend; nil means backends.DialSMTP with the route's server.
	// (A Dial set here is not told the route's server nor the client's address.)
	Dial func(ctx context.Context, user string, secret backends.Secret) (*backends.SMTPSession, error)
	// Limits are the connection limits of this listener (zero value: the defaults).
	Limits proxy.Limits
	// Logger receives connection and authentication events; nil discards them.
	Logger *slog.Logger
	// Observer, if set, receives the listener's connections, sessions, authentications,
	// backend logins and relayed message bytes (internal/metrics implements it).
	Observer proxy.Observer

	ext    atomic.Pointer[backends.Extensions] // from the last successful probe
	domain string                              // the greeting's name, set before the first accept
	fe     frontend.Server
}

func (s *Server) logger() *slog.Logger { return frontend.Logger(s.Logger) }

func (s *Server) dial(ctx context.Context, r backends.Route, secret backends.Secret, client backends.Client) (*backends.SMTPSession, error) {
	if s.Dial != nil {
		return s.Dial(ctx, r.User, secret)
	}
	return backends.DialSMTP(ctx, r.Config, r.User, secret, client)
}

// Serve accepts connections on ln until Shutdown or Close; it always returns a non-nil error,
// ErrServerClosed after a shutdown. The first Serve probes the backend's extensions before
// accepting, then again every Config.ExtensionsRefresh.
func (s *Server) Serve(ln net.Listener) error {
	switch {
	case s.TLSConfig == nil:
		return errors.New("smtp: Server.TLSConfig is required")
	case s.Login == nil || s.Login.Validator == nil || s.Login.Router == nil:
		return errors.New("smtp: Server.Login with a Validator and a Router is required")
	}
	return s.fe.Serve(ln, frontend.Listen{
		Protocol: Protocol.Name, Listener: s.Listener, TLSConfig: s.TLSConfig, Limits: s.Limits,
		Refusal: "421 4.7.0 %s\r\n", Logger: s.Logger, Observer: s.Observer,
		Start: func() { s.domain = s.Config.hostname(s.Listener.PublicHost) },
		Probe: s.probe,
	}, s.newConn)
}

// newConn is the session of an accepted connection (FuzzSession makes its own with it).
func (s *Server) newConn(nc net.Conn, id string, obs proxy.Observer) proxy.Session {
	return &conn{
		Conn:     nc,
		obs:      obs,
		client:   frontend.ClientOf(nc),
		s:        s,
		log:      s.logger().With("conn", id, "listener", s.Listener.Name, "remote", nc.RemoteAddr().String()),
		preauth:  time.Now().Add(s.Config.PreauthTimeout.Or(DefaultPreauthTimeout)),
		idle:     s.Config.IdleTimeout.Or(DefaultIdleTimeout),
		finished: make(chan struct{}),
	}
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done, then closes
// those left.
func (s *Server) Shutdown(ctx context.Context) error { return s.fe.Shutdown(ctx) }

// Close stops accepting and closes every session at once.
func (s *Server) Close() error { return s.fe.Close() }

// probe learns the backend's extensions and returns when to probe next.
func (s *Server) probe(ctx context.Context) time.Duration {
	cfg, err := s.Login.Router.Any(Protocol.Name)
	var ext backends.Extensions
	if err == nil {
		ext, err = backends.ProbeSMTP(ctx, cfg)
	}
	if ctx.Err() != nil {
		return 0 // the server is closing
	}
	if err == nil && cfg.TLS == "none" {
		// RFC 8689 §4.1: REQUIRETLS only when the next hop is TLS as well.
		delete(ext, "REQUIRETLS")
	}
	if err != nil {
		s.logger().Warn("backend EHLO probe failed; announcing only what saslgate itself offers",
			"listener", s.Listener.Name, "reason", err)
		return probeRetry
	}
	if old := s.ext.Swap(&ext); old == nil || !maps.Equal(*old, ext) {
		s.logger().Info("backend extensions", "listener", s.Listener.Name, "extensions", ext)
	}
	return s.Config.ExtensionsRefresh.Or(DefaultExtensionsRefresh)
}

func (s *Server) extensions() backends.Extensions {
	if p := s.ext.Load(); p != nil {
		return *p
	}
	return nil
}

// smtpServer is a go-smtp server for one connection, announcing the extensions the backend
// offered to the last probe, so the list can change between connections without a data race.
func (s *Server) smtpServer(c *conn) *gosmtp.Server {
	ext := s.extensions()
	srv := gosmtp.NewServer(gosmtp.BackendFunc(c.newSession))
	srv.Domain = s.domain
	srv.MaxLineLength = s.Config.maxLineLength()
	srv.MaxMessageBytes = s.Config.maxMessageBytes(ext.Size())
	// go-smtp would answer AUTH before TLS with 523 5.7.10; session.Auth answers it with
	// RFC 4954 §6's 538 5.7.11 instead, and AuthMechanisms keeps AUTH out of EHLO until then.
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = ext.Has("SMTPUTF8")
	srv.EnableDSN = ext.Has("DSN")
	srv.EnableREQUIRETLS = ext.Has("REQUIRETLS") // not when the probed member is plain TCP (probe)
	srv.WriteTimeout = s.Config.IdleTimeout.Or(DefaultIdleTimeout)
	srv.ErrorLog = slog.NewLogLogger(c.log.Handler(), slog.LevelWarn)
	if s.Listener.TLS == proxy.TLSStartTLS {
		srv.TLSConfig = c.tlsConfig
	}
	return srv
}

// conn is one client connection, and the net.Conn go-smtp's server reads (under TLS, if
// any). Every read has a deadline: the fixed pre-authentication one until AUTH succeeds, then
// the idle timeout. Close, which go-smtp calls last, unregisters the connection.
type conn struct {
	net.Conn                 // the accepted socket
	client   backends.Client // the client's address and the one it connected to
	s        *Server
	log      *slog.Logger
	preauth  time.Time
	idle     time.Duration
	obs      proxy.Observer

	authed      atomic.Bool
	handshakeBy atomic.Int64               // while a TLS handshake runs: its deadline (Unix ns)
	hangup      atomic.Bool                // close once the next reply is written
	replyTimer  atomic.Pointer[time.Timer] // armed while an error challenge awaits its reply
	closed      sync.Once
	finished    chan struct{} // closed by Close: the session is over

	mu      sync.Mutex
	wire    net.Conn              // what go-smtp writes to: this conn, or TLS over it
	backend *backends.SMTPSession // closed by abort
	pending []byte                // read by clientGone, for the next Read

	tlsConfig *tls.Config     // this connection's, recording the certificate served
	served    *binding.Served // for tls-server-end-point

	// greeted and tlsStarted find go-smtp's reply to STARTTLS among the writes.
	greeted, tlsStarted atomic.Bool

	// plainTLS is set by FuzzSession only: sessions on this plain connection take it for
	// their TLS state, so each input skips a handshake that would cost more than the rest.
	plainTLS *tls.ConnectionState
}

// Serve runs the connection until go-smtp closes it (proxy.Session).
func (c *conn) Serve(release func()) {
	defer release()
	c.obs.SessionStarted()
	defer func() { c.obs.SessionEnded(c.authed.Load()) }()
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("panic in connection; closed", "panic", v, "stack", string(debug.Stack()))
			c.Close()
		}
	}()
	var nc net.Conn = c
	c.tlsConfig, c.served = binding.ServerConfig(c.s.fe.TLSConfig())
	// A handshake ends with VerifyConnection, on the server side too: the end of the
	// handshake deadline, for the implicit handshake and the one after STARTTLS alike.
	verify := c.tlsConfig.VerifyConnection
	c.tlsConfig.VerifyConnection = func(cs tls.ConnectionState) error {
		c.handshakeBy.Store(0)
		if verify != nil {
			return verify(cs)
		}
		return nil
	}
	if c.s.Listener.TLS == proxy.TLSImplicit {
		tc := tls.Server(c, c.tlsConfig)
		hs := c.s.Listener.HandshakeDeadline(c.preauth)
		c.handshakeBy.Store(hs.UnixNano())
		_ = c.SetWriteDeadline(hs)
		err := tc.Handshake()
		_ = c.SetWriteDeadline(c.preauth)
		if err != nil {
			c.log.Debug("connection ended", "reason", fmt.Errorf("smtp: TLS handshake: %w", err))
			c.Close()
			return
		}
		nc = tc
	}
	c.mu.Lock()
	c.wire = nc
	c.mu.Unlock()
	// go-smtp serves the connection on its own goroutine; its Serve returns once the
	// one-shot listener reports itself closed, and the session lasts until Close.
	_ = c.s.smtpServer(c).Serve(&oneConn{c: nc})
	<-c.finished
}

func (c *conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	deadline := c.preauth
	if c.authed.Load() {
		deadline = time.Now().Add(c.idle)
	}
	if hs := c.handshakeBy.Load(); hs != 0 && hs < deadline.UnixNano() {
		deadline = time.Unix(0, hs)
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.disarm() // the client answered whatever it was asked
	}
	return n, err
}

// clientGone reports whether the client has closed its end, waiting up to d for its FIN; bytes
// that arrive instead are kept for the next Read. Nothing else may read meanwhile.
func (c *conn) clientGone(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var buf [512]byte
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.Conn.Read(buf[:])
	c.pending = append(c.pending, buf[:n]...)
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func (c *conn) Write(b []byte) (int, error) {
	// go-smtp has no hook before its STARTTLS handshake: its 220 reply, the only 220 after
	// the greeting on a connection without TLS, starts the handshake's deadline.
	if c.s.Listener.TLS == proxy.TLSStartTLS && !c.tlsStarted.Load() && c.greeted.Swap(true) &&
		bytes.HasPrefix(b, []byte("220 ")) && !c.tlsStarted.Swap(true) {
		c.handshakeBy.Store(c.s.Listener.HandshakeDeadline(c.preauth).UnixNano())
	}
	n, err := c.Conn.Write(b)
	if c.hangup.Load() {
		c.Conn.Close()
	}
	return n, err
}

// Close closes the socket and ends the session.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.disarm()
	c.closed.Do(func() { close(c.finished) })
	return err
}

// Abort closes the socket and the backend connection, for Server.Close; go-smtp then sees
// its reads fail and ends the session (proxy.Session).
func (c *conn) Abort() {
	c.Conn.Close()
	c.mu.Lock()
	if c.backend != nil {
		c.backend.Close()
	}
	c.mu.Unlock()
}

// endWait bounds End's write of its 421 to a slow client.
const endWait = 2 * time.Second

// End ends the connection for a drain (proxy.Session): "421 4.3.2" (RFC 5321 §3.8; RFC 3463
// 4.3.2, system not accepting network messages), then the socket and the backend session
// close. A message whose data was not complete is abandoned at the backend, not delivered.
func (c *conn) End() {
	c.mu.Lock()
	w := c.wire
	c.mu.Unlock()
	if w != nil {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(endWait))
		_, _ = w.Write([]byte("421 4.3.2 Service shutting down, please reconnect\r\n"))
	}
	c.Abort()
}

// hangUp makes the next reply the last (RFC 5321 §3.8: after a 421 the server closes).
func (c *conn) hangUp() { c.hangup.Store(true) }

func (c *conn) setBackend(be *backends.SMTPSession) {
	c.mu.Lock()
	c.backend = be
	c.mu.Unlock()
}

// arm runs f after d unless the client sends something first.
func (c *conn) arm(d time.Duration, f func()) {
	if old := c.replyTimer.Swap(time.AfterFunc(d, f)); old != nil {
		old.Stop()
	}
}

func (c *conn) disarm() {
	if t := c.replyTimer.Swap(nil); t != nil {
		t.Stop()
	}
}

// oneConn is a listener holding one connection: go-smtp's Serve takes it and then, told the
// listener is closed, returns. saslgate runs its own accept loop so each connection gets a
// go-smtp server configured for it and a place in the Server's registry.
type oneConn struct{ c net.Conn }

func (l *oneConn) Accept() (net.Conn, error) {
	c := l.c
	if c == nil {
		return nil, net.ErrClosed
	}
	l.c = nil
	return c, nil
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return &net.TCPAddr{} }
