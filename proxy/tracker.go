package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrServerClosed is returned by a front end's Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Session is one accepted connection as a front end runs it.
type Session interface {
	// Serve runs the connection to its end.
	Serve()
	// Abort closes the connection at once; it is called from another goroutine.
	Abort()
}

// Tracker runs a front end's accept loops and keeps the registry of its open
// sessions, so that Shutdown and Close behave alike for every protocol (the
// shape of net/http's and go-smtp's servers). The zero value is ready to use.
type Tracker struct {
	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[Session]struct{}
	wg        sync.WaitGroup
	done      chan struct{} // closed when closing starts
}

// Serve accepts on ln until Shutdown or Close and runs each connection's
// session, made by newSession, on its own goroutine. It returns
// ErrServerClosed after a shutdown, or the accept error that stopped it.
func (t *Tracker) Serve(ln net.Listener, log *slog.Logger, newSession func(net.Conn) Session) error {
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
		if !t.start(nc, newSession) {
			nc.Close()
			return ErrServerClosed
		}
	}
}

func (t *Tracker) init() {
	if t.listeners == nil {
		t.listeners = make(map[net.Listener]struct{})
		t.sessions = make(map[Session]struct{})
		t.done = make(chan struct{})
	}
}

func (t *Tracker) start(nc net.Conn, newSession func(net.Conn) Session) bool {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return false
	}
	s := newSession(nc)
	t.sessions[s] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.forget(s)
		s.Serve()
	}()
	return true
}

func (t *Tracker) forget(s Session) {
	t.mu.Lock()
	delete(t.sessions, s)
	t.mu.Unlock()
	t.wg.Done()
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
// done, then aborts those left.
func (t *Tracker) Shutdown(ctx context.Context) error {
	t.closeListeners()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		t.abortAll()
		<-done
		return ctx.Err()
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
}
