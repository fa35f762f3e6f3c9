package imap

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

// Server serves one IMAP listener. Set the fields, then call Serve.
type Server struct {
	Listener  proxy.ListenerConfig
	Config    Config
	TLSConfig *tls.Config // required: implicit TLS and STARTTLS both need it
	// Login runs every authentication: the failure delay, token validation and policy, the
	// backend secret and login (proxy.Login). Required.
	Login *proxy.Login
	// Dial logs in to the backend; nil means backends.DialIMAP with the route's server.
	// (A Dial set here is not told the route's server nor the client's address.)
	Dial   func(ctx context.Context, user string, secret backends.Secret) (*backends.IMAPSession, error)
	Logger *slog.Logger
	// Limits are the connection limits of this listener (zero value: the defaults).
	Limits proxy.Limits
	// Observer, if set, receives the listener's connections, sessions, authentications,
	// backend logins and relayed bytes (internal/metrics implements it).
	Observer proxy.Observer

	fe frontend.Server
}

func (s *Server) logger() *slog.Logger { return frontend.Logger(s.Logger) }

func (s *Server) dial(ctx context.Context, r backends.Route, secret backends.Secret, client backends.Client) (*backends.IMAPSession, error) {
	if s.Dial != nil {
		return s.Dial(ctx, r.User, secret)
	}
	return backends.DialIMAP(ctx, r.Config, r.User, secret, client)
}

// Serve accepts connections on ln until Shutdown or Close; it always returns a
// non-nil error, ErrServerClosed after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	switch {
	case s.TLSConfig == nil:
		return errors.New("imap: Server.TLSConfig is required")
	case s.Login == nil || s.Login.Router == nil:
		return errors.New("imap: Server.Login with a Router is required")
	}
	return s.fe.Serve(ln, frontend.Listen{
		Protocol: Protocol.Name, Listener: s.Listener, TLSConfig: s.TLSConfig, Limits: s.Limits,
		Refusal: "* BYE %s\r\n", Logger: s.Logger, Observer: s.Observer,
	}, s.newConn)
}

// newConn is the session of an accepted connection.
func (s *Server) newConn(nc net.Conn, id string, obs proxy.Observer) proxy.Session {
	return &conn{s: s, Conn: frontend.NewConn(nc, id, s.logger(), s.Listener.Name, obs, byeShutdown)}
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done,
// then closes those left.
func (s *Server) Shutdown(ctx context.Context) error { return s.fe.Shutdown(ctx) }

// Close stops accepting and closes every session at once.
func (s *Server) Close() error { return s.fe.Close() }

// conn is one client connection: the not-authenticated state of RFC 9051 §3.1.
type conn struct {
	frontend.Conn
	s   *Server
	bad int
}

// Serve runs the connection (proxy.Session).
func (c *conn) Serve(release func()) { c.Run(release, c.run) }
