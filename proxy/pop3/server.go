package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/frontend"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = proxy.ErrServerClosed

// Server serves one POP3 listener. Set the fields, then call Serve.
type Server struct {
	Listener  proxy.ListenerConfig
	Config    Config
	TLSConfig *tls.Config // required: implicit TLS and STLS both need it
	// Login runs every authentication: the failure delay, token validation and policy, the
	// route, the backend secret and login (proxy.Login). Required, with a Router.
	Login *proxy.Login
	// Dial logs in to the backend; nil means backends.DialPOP3 with the route's server.
	// (A Dial set here is not told the route's server nor the client's address.)
	Dial   func(ctx context.Context, user string, secret backends.Secret) (*backends.POP3Session, error)
	Logger *slog.Logger
	// Limits are the connection limits of this listener (zero value: the defaults).
	Limits proxy.Limits
	// Observer, if set, receives the listener's connections, sessions, authentications,
	// backend logins and relayed bytes (internal/metrics implements it).
	Observer proxy.Observer

	fe frontend.Server
}

func (s *Server) logger() *slog.Logger { return frontend.Logger(s.Logger) }

func (s *Server) dial(ctx context.Context, r backends.Route, secret backends.Secret, client backends.Client) (*backends.POP3Session, error) {
	if s.Dial != nil {
		return s.Dial(ctx, r.User, secret)
	}
	return backends.DialPOP3(ctx, r.Config, r.User, secret, client)
}

// Serve accepts connections on ln until Shutdown or Close; it always returns a
// non-nil error, ErrServerClosed after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	switch {
	case s.TLSConfig == nil:
		return errors.New("pop3: Server.TLSConfig is required")
	case s.Login == nil || s.Login.Router == nil:
		return errors.New("pop3: Server.Login with a Router is required")
	}
	return s.fe.Serve(ln, frontend.Listen{
		Protocol: Protocol.Name, Listener: s.Listener, TLSConfig: s.TLSConfig, Limits: s.Limits,
		// RFC 2449 §8.1 and RFC 3206 §4: a refusal that may pass is [SYS/TEMP].
		Refusal: "-ERR [SYS/TEMP] %s\r\n", Logger: s.Logger, Observer: s.Observer,
	}, s.newConn)
}

// newConn is the session of an accepted connection. A spliced session has no goodbye at the
// end of a drain, and closes at once: POP3 has no unsolicited server line (RFC 1939 §3), and
// which responses are multi-line depends on the client's commands, so no goodbye can be
// placed between two responses; the client sees the connection close, as for a lost backend
// (DESIGN.md's error table). One not yet logged in gets replyShutdown at its next read.
func (s *Server) newConn(nc net.Conn, id string, obs proxy.Observer) proxy.Session {
	return &conn{s: s, Conn: frontend.NewConn(nc, id, s.logger(), s.Listener.Name, obs, "")}
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done,
// then closes those left.
func (s *Server) Shutdown(ctx context.Context) error { return s.fe.Shutdown(ctx) }

// Close stops accepting and closes every session at once.
func (s *Server) Close() error { return s.fe.Close() }

// conn is one client connection: the AUTHORIZATION state of RFC 1939 §4.
type conn struct {
	frontend.Conn
	s   *Server
	bad int
	// user is the name of a USER the command just before gave (RFC 1939 §7: PASS comes
	// right after USER).
	user     string
	attempts int // authentication attempts so far, for the route sources
}

// Serve runs the connection (proxy.Session).
func (c *conn) Serve(release func()) { c.Run(release, c.run) }
