package fetest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/saslgate/saslgate/introspect"
)

// FuzzValidator accepts the token "good" for alice, fails "temporary" for a while, and
// refuses everything else.
type FuzzValidator struct{}

// Validate judges r.Token alone.
func (FuzzValidator) Validate(_ context.Context, r introspect.Request) (introspect.Identity, error) {
	switch r.Token {
	case "good":
		return introspect.Identity{User: "alice"}, nil
	case "temporary":
		return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrTemporary, Reason: "fuzz"}
	}
	return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInvalidToken, Reason: "fuzz"}
}

// MemClient is the server's end of a client that sent all its bytes at once and waits for
// the server to close: reads return them, then time out at once, as the read deadline would
// end a real wait. Replies are kept.
type MemClient struct {
	mu     sync.Mutex
	in     strings.Reader
	out    bytes.Buffer
	closed bool
}

// NewMemClient is a client that has sent in.
func NewMemClient(in string) *MemClient {
	c := &MemClient{}
	c.in.Reset(in)
	return c
}

// Result is what the server wrote, and whether it closed the connection.
func (c *MemClient) Result() (out string, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String(), c.closed
}

func (c *MemClient) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return 0, net.ErrClosed
	case c.in.Len() == 0:
		return 0, os.ErrDeadlineExceeded
	}
	return c.in.Read(p)
}

func (c *MemClient) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

// Close closes the connection; Result reports it.
func (c *MemClient) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (*MemClient) LocalAddr() net.Addr              { return MemAddr{} }
func (*MemClient) RemoteAddr() net.Addr             { return MemAddr{} }
func (*MemClient) SetDeadline(time.Time) error      { return nil }
func (*MemClient) SetReadDeadline(time.Time) error  { return nil }
func (*MemClient) SetWriteDeadline(time.Time) error { return nil }

// MemAddr is the address of both ends of an in-memory connection.
type MemAddr struct{}

// Network is "mem".
func (MemAddr) Network() string { return "mem" }

// String is "mem".
func (MemAddr) String() string { return "mem" }

// DropTime leaves the time out of log records (slog.HandlerOptions.ReplaceAttr), so that
// fuzz coverage does not change with the clock.
func DropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
