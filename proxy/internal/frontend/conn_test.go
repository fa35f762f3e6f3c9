package frontend

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/proxy"
)

// lockedBuffer is a log destination the relay's goroutines and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A spliced session keeps no logger; its last line still carries the connection's
// attributes and the user, in the order they had while it was being logged in.
func TestSplicedSessionEndLine(t *testing.T) {
	var out lockedBuffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	client, clientPeer := net.Pipe()
	backend, backendPeer := net.Pipe()
	c := NewConn(client, "bench-7", log, "bench", proxy.NopObserver{}, "")
	released := make(chan struct{})
	c.Run(func() { close(released) }, func() error {
		c.SetStream(client)
		c.LoggedIn("user@example.com")
		return c.Splice(backend, bufio.NewReader(backend), nil)
	})
	clientPeer.Close()
	backendPeer.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
	want := `level=INFO msg="session ended" conn=bench-7 listener=bench remote=pipe user=user@example.com bytes_up=0 bytes_down=0`
	if got := strings.TrimSpace(out.String()); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}
