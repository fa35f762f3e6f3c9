package fetest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
)

// Server is what a front end's Server offers Start.
type Server interface {
	Serve(ln net.Listener) error
	Close() error
}

// Modes are the TLS modes of the two listeners Start starts.
var Modes = []string{proxy.TLSImplicit, proxy.TLSStartTLS}

// Setup is what differs between the front ends' gateways, besides their Server type.
type Setup struct {
	Protocol string              // the listeners' proxy.ListenerConfig.Protocol
	Scopes   map[string][]string // the issuer's introspect.IssuerConfig.Scopes
	LogLevel slog.Level          // the servers' logs reach the test's log from this level on
}

// Listener is what Start hands newServer for one listener: its configuration, named after
// its TLS mode, the certificate's TLS configuration, a login pipeline of its own that takes
// the issuer's tokens and knows alice's backend secret "backend-secret", and a logger to the
// test's log.
type Listener struct {
	Config proxy.ListenerConfig
	TLS    *tls.Config
	Login  *proxy.Login
	Logger *slog.Logger
}

// Gateway is one front end's two listeners, one per TLS mode in Modes, with a demo issuer and
// the self-signed certificate they serve.
type Gateway[S Server] struct {
	Issuer   *Issuer
	Cert     *Cert
	Servers  map[string]S // by TLS mode
	ImplAddr string       // the implicit-TLS listener's address
	STLSAddr string       // the STARTTLS listener's address
}

// Start starts a demo issuer and, for each TLS mode, a server made by newServer serving on a
// loopback listener until the test's cleanup closes it.
func Start[S Server](t *testing.T, setup Setup, newServer func(l Listener) S) *Gateway[S] {
	t.Helper()
	g := &Gateway[S]{Issuer: NewIssuer(t), Cert: NewCert(t), Servers: map[string]S{}}
	v := g.Issuer.Validator(t, setup.Scopes)
	for _, mode := range Modes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := newServer(Listener{
			Config: proxy.ListenerConfig{Name: mode, Protocol: setup.Protocol, Address: ln.Addr().String(), TLS: mode},
			TLS:    g.Cert.ServerTLS(),
			Login:  &proxy.Login{Validator: v, Secrets: SecretMap{"alice": "backend-secret"}},
			Logger: Logger(t, setup.LogLevel),
		})
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		g.Servers[mode] = srv
		if mode == proxy.TLSImplicit {
			g.ImplAddr = ln.Addr().String()
		} else {
			g.STLSAddr = ln.Addr().String()
		}
	}
	return g
}

// Dial connects a client to the implicit-TLS listener, or in plain text to the STARTTLS one.
// It reads nothing.
func (g *Gateway[S]) Dial(t *testing.T, implicit bool) *Client {
	t.Helper()
	if implicit {
		return Dial(t, g.ImplAddr, g.Cert.ClientTLS())
	}
	return Dial(t, g.STLSAddr, nil)
}

// SecretMap is a proxy.SecretSource: each user's backend secret.
type SecretMap map[string]backends.Secret

// Secret returns user's secret, or backends.ErrUnknownUser.
func (m SecretMap) Secret(_ context.Context, user string) (backends.Secret, error) {
	s, ok := m[user]
	if !ok {
		return "", backends.ErrUnknownUser
	}
	return s, nil
}

// FixedDelay is a proxy.AuthLimiter that asks every authentication to wait as long as itself.
type FixedDelay time.Duration

// Failed does nothing.
func (FixedDelay) Failed(netip.Addr, string) {}

// Delay is d.
func (d FixedDelay) Delay(netip.Addr, string) time.Duration { return time.Duration(d) }

// Logger logs text records at level and above to the test's log.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: level}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
