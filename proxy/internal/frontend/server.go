package frontend

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/tls/binding"
)

// Server is what a front end's Server holds beneath its exported fields. The zero value is
// ready to use.
type Server struct {
	// Sessions is the registry of the listener's sessions: Shutdown and Close act on it, and
	// its Done ends the front end's background work.
	Sessions proxy.Tracker

	nextID    atomic.Uint64
	initTLS   sync.Once
	tlsConfig *tls.Config // the listener's, asking for client certificates as it says
	connTLS   *tls.Config // tlsConfig for every connection's handshake (binding.ListenerConfig)
	tlsErr    error
	start     sync.Once
	probing   sync.WaitGroup // Listen.Probe's goroutines
}

// Listen is what Serve needs of a front end's Server.
type Listen struct {
	// Protocol is the protocol's name, the prefix of Serve's errors ("imap").
	Protocol  string
	Listener  proxy.ListenerConfig
	TLSConfig *tls.Config // the served certificate, which InitTLS adds client-certificate requests to
	Limits    proxy.Limits
	// Refusal is the protocol's answer to a connection over a limit (proxy.Accept.Refusal).
	Refusal  string
	Logger   *slog.Logger // nil discards
	Observer proxy.Observer
	// Start, if set, runs once, before the first accept.
	Start func()
	// Probe, if set, learns what the backend offers and returns when to learn it again: once
	// before the first accept, then in the background until Shutdown or Close begins. Its
	// ctx ends then, so that a probe in progress stops; Shutdown and Close return after it
	// has.
	Probe func(ctx context.Context) (next time.Duration)
}

// NewSession makes the session of an accepted connection: id names it in logs, obs is the
// listener's Observer, never nil.
type NewSession func(nc net.Conn, id string, obs proxy.Observer) proxy.Session

// InitTLS derives the listener's TLS configuration from base once; Serve does it first.
func (s *Server) InitTLS(l proxy.ListenerConfig, base *tls.Config) error {
	s.initTLS.Do(func() {
		if s.tlsConfig, s.tlsErr = l.ServerTLS(base); s.tlsErr == nil {
			s.connTLS = binding.ListenerConfig(s.tlsConfig)
		}
	})
	return s.tlsErr
}

// TLSConfig is the listener's TLS configuration, once InitTLS has run.
func (s *Server) TLSConfig() *tls.Config { return s.tlsConfig }

// ConnTLS is the configuration Conn.StartTLS runs every handshake with, once InitTLS has
// run: TLSConfig, recording the certificate each connection is served.
func (s *Server) ConnTLS() *tls.Config { return s.connTLS }

// Serve accepts connections on ln until Shutdown or Close and runs the session newSession
// makes of each; it always returns a non-nil error, proxy.ErrServerClosed after a shutdown.
func (s *Server) Serve(ln net.Listener, l Listen, newSession NewSession) error {
	if err := s.InitTLS(l.Listener, l.TLSConfig); err != nil {
		return fmt.Errorf("%s: %w", l.Protocol, err)
	}
	if s.Sessions.Closing() {
		return proxy.ErrServerClosed
	}
	s.start.Do(func() {
		if l.Start != nil {
			l.Start()
		}
		if l.Probe != nil {
			s.startProbes(l.Probe)
		}
	})
	obs := cmp.Or(l.Observer, proxy.Observer(proxy.NopObserver{}))
	accept := proxy.Accept{
		Listener: l.Listener, Limits: l.Limits, Refusal: l.Refusal, TLSConfig: s.tlsConfig,
		Log: Logger(l.Logger).With("listener", l.Listener.Name), Observer: obs,
	}
	err := s.Sessions.Serve(ln, accept, func(nc net.Conn) proxy.Session {
		return newSession(nc, fmt.Sprintf("%s-%d", l.Listener.Name, s.nextID.Add(1)), obs)
	})
	if err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		return fmt.Errorf("%s: accept: %w", l.Protocol, err)
	}
	return err
}

// startProbes runs probe now, then again after each interval it returns until the sessions
// close, which ends its context.
func (s *Server) startProbes(probe func(ctx context.Context) time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	s.probing.Add(2)
	go func() {
		defer s.probing.Done()
		<-s.Sessions.Done()
		cancel()
	}()
	next := probe(ctx)
	go func() {
		defer s.probing.Done()
		t := time.NewTimer(next)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(probe(ctx))
			}
		}
	}()
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done, then closes
// those left; it returns once the backend probes have stopped too.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.Sessions.Shutdown(ctx)
	s.waitProbes()
	return err
}

// Close stops accepting and closes every session at once; it returns once the backend
// probes have stopped too.
func (s *Server) Close() error {
	err := s.Sessions.Close()
	s.waitProbes()
	return err
}

// waitProbes waits for Listen.Probe's goroutines, once the sessions have begun to close. A
// Serve starting meanwhile has either started them (start.Do returns after it has) or will
// not: Serve checks Closing first.
func (s *Server) waitProbes() {
	s.start.Do(func() {})
	s.probing.Wait()
}

// discard is the logger of a Server without one.
var discard = slog.New(slog.DiscardHandler)

// Logger is log, or a logger that discards when log is nil.
func Logger(log *slog.Logger) *slog.Logger { return cmp.Or(log, discard) }
