package sieve

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/frontend"
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

	caps atomic.Pointer[[]backends.SieveCapability] // the backend's, as passed on; from the last probe
	fe   frontend.Server
}

func (s *Server) logger() *slog.Logger { return frontend.Logger(s.Logger) }

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
	return s.fe.Serve(ln, frontend.Listen{
		Protocol: Protocol.Name, Listener: s.Listener, TLSConfig: s.TLSConfig, Limits: s.Limits,
		Refusal: `BYE (TRYLATER) "%s"` + "\r\n", Logger: s.Logger, Observer: s.Observer,
		Probe: s.probe,
	}, s.newConn)
}

// newConn is the session of an accepted connection.
func (s *Server) newConn(nc net.Conn, id string, obs proxy.Observer) proxy.Session {
	return &conn{s: s, Conn: frontend.NewConn(nc, id, s.logger(), s.Listener.Name, obs, byeShutdown)}
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done, then closes
// those left.
func (s *Server) Shutdown(ctx context.Context) error { return s.fe.Shutdown(ctx) }

// Close stops accepting and closes every session at once.
func (s *Server) Close() error { return s.fe.Close() }

// probe learns the backend's capabilities and returns when to probe next.
func (s *Server) probe(ctx context.Context) time.Duration {
	cfg, err := s.Login.Router.Any(Protocol.Name)
	var caps []backends.SieveCapability
	if err == nil {
		caps, err = backends.ProbeSieve(ctx, cfg)
	}
	if ctx.Err() != nil {
		return 0 // the server is closing
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

// conn is one client connection: the not-authenticated state of RFC 5804 §2.
type conn struct {
	frontend.Conn
	s   *Server
	bad int

	// plainTLS is set by the fuzz test only: the connection, plain in memory, counts as TLS
	// with this state, so each input skips a handshake that would cost more than the rest.
	plainTLS *tls.ConnectionState
}

// Serve runs the connection (proxy.Session).
func (c *conn) Serve(release func()) { c.Run(release, c.run) }
