package imap

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("imap: server closed")

// Server serves one IMAP listener. Set the fields, then call Serve.
type Server struct {
	Listener  proxy.ListenerConfig
	Config    Config
	TLSConfig *tls.Config // required: implicit TLS and STARTTLS both need it
	Validator proxy.Validator
	Secrets   proxy.SecretSource
	// Dial logs in to the backend; nil means backends.DialIMAP with Config.Backend.
	Dial   func(ctx context.Context, user string, secret backends.Secret) (*backends.IMAPSession, error)
	Logger *slog.Logger

	tlsConfig *tls.Config // TLSConfig asking for client certificates as Listener says
	nextID    atomic.Uint64
	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) dial(ctx context.Context, user string, secret backends.Secret) (*backends.IMAPSession, error) {
	if s.Dial != nil {
		return s.Dial(ctx, user, secret)
	}
	return backends.DialIMAP(ctx, s.Config.Backend, user, secret)
}

// Serve accepts connections on ln until Shutdown or Close; it always returns a
// non-nil error, ErrServerClosed after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.TLSConfig == nil {
		return errors.New("imap: Server.TLSConfig is required")
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.tlsConfig == nil {
		cfg, err := s.Listener.ServerTLS(s.TLSConfig)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("imap: %w", err)
		}
		s.tlsConfig = cfg
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if retryableAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed; backing off", "listener", s.Listener.Name, "reason", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("imap: accept: %w", err)
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// retryableAccept reports accept errors that pass (out of descriptors, a
// connection reset before accept), so the loop backs off instead of exiting.
func retryableAccept(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	c := &conn{
		s:      s,
		id:     fmt.Sprintf("%s-%d", s.Listener.Name, s.nextID.Add(1)),
		raw:    nc,
		nc:     nc,
		remote: nc.RemoteAddr().String(),
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, waits for open sessions to end until ctx is done,
// then closes those left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting and closes every session at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.close()
	}
}

// conn is one client connection.
type conn struct {
	s      *Server
	id     string
	remote string
	log    *slog.Logger

	raw net.Conn // the accepted socket
	nc  net.Conn // raw, or TLS over it
	br  *bufio.Reader
	bw  *bufio.Writer
	tls bool
	bnd proxy.Conn // what the credentials are checked against (TLS state, served certificate)
	bad int

	mu      sync.Mutex
	backend net.Conn // set while spliced, closed by close()
}

func (c *conn) close() {
	c.raw.Close()
	c.mu.Lock()
	if c.backend != nil {
		c.backend.Close()
	}
	c.mu.Unlock()
}

func (c *conn) serve() {
	defer c.s.forget(c)
	defer c.close()
	c.log = c.s.logger().With("conn", c.id, "listener", c.s.Listener.Name, "remote", c.remote)
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("panic in connection; closed", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	if err := c.run(); err != nil {
		c.log.Debug("connection ended", "reason", err)
	}
}
