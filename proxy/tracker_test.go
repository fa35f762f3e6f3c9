package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"
)

// echoSession holds its connection open until the client closes it or it is aborted.
type echoSession struct{ nc net.Conn }

func (s *echoSession) Serve() {
	buf := make([]byte, 64)
	for {
		if _, err := s.nc.Read(buf); err != nil {
			return
		}
	}
}

func (s *echoSession) Abort() { s.nc.Close() }

func startTracker(t *testing.T) (*Tracker, string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracker{}
	errc := make(chan error, 1)
	go func() {
		errc <- tr.Serve(ln, slogDiscard(), func(nc net.Conn) Session { return &echoSession{nc: nc} })
	}()
	return tr, ln.Addr().String(), errc
}

// Shutdown waits for an open session; when its context ends first, the
// session is aborted and Shutdown reports the context's error.
func TestTrackerShutdown(t *testing.T) {
	tr, addr, errc := startTracker(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		tr.mu.Lock()
		n := len(tr.sessions)
		tr.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session never registered")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := tr.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with an open session = %v, want the context's deadline", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("session still open after Shutdown's deadline")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

// A session that ends by itself lets Shutdown return nil at once.
func TestTrackerShutdownClean(t *testing.T) {
	tr, addr, _ := startTracker(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("Close after Shutdown = %v", err)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
