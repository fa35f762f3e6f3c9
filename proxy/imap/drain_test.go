package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/proxy"
)

func TestResponseBoundary(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		between  bool
	}{
		{"empty", "", true},
		{"one line", "* OK IDLE accepted\r\n", true},
		{"half a line", "* 3 EXI", false},
		{"CR only", "* 3 EXISTS\r", false},
		{"literal announced", "* 1 FETCH (BODY[] {5}\r\n", false},
		{"inside the literal", "* 1 FETCH (BODY[] {5}\r\nhel", false},
		{"literal data looks like a line end", "* 1 FETCH (BODY[] {13}\r\nab\r\n{3}\r\nxy\r\n", false},
		{"literal done, line open", "* 1 FETCH (BODY[] {5}\r\nhello", false},
		{"literal and line done", "* 1 FETCH (BODY[] {5}\r\nhello)\r\n", true},
		{"two literals in one line", "* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {3}\r\nxyz)\r\n", true},
		{"second literal pending", "* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {3}\r\nxy", false},
		{"literal8", "* 1 FETCH (BINARY[] ~{2}\r\n\x00\x01)\r\n", true},
		{"zero literal", "* 1 FETCH (BODY[] {0}\r\n)\r\n", true},
		{"not a literal: brace text", "* OK [ALERT] {not a literal}\r\n", true},
		{"not a literal: too many digits", "* OK {12345678901234567890}\r\n", true},
		{"long line then literal", "* 1 FETCH (" + strings.Repeat("X", 5000) + " {4}\r\nabcd)\r\n", true},
		{"tagged after untagged", "* 2 EXPUNGE\r\nA4 OK done\r\n", true},
	} {
		// Every split into two chunks gives the same answer as one chunk.
		for cut := 0; cut <= len(tc.in); cut++ {
			var r responseBoundary
			r.feed([]byte(tc.in[:cut]))
			r.feed([]byte(tc.in[cut:]))
			if got := r.between(); got != tc.between {
				t.Errorf("%s, cut at %d: between = %v, want %v", tc.name, cut, got, tc.between)
				break
			}
		}
		// And byte by byte.
		var r responseBoundary
		for i := range len(tc.in) {
			r.feed([]byte{tc.in[i]})
		}
		if r.between() != tc.between {
			t.Errorf("%s, byte by byte: between = %v, want %v", tc.name, r.between(), tc.between)
		}
	}
}

// FuzzResponseBoundary: how the backend's bytes are chunked never changes where responses end.
func FuzzResponseBoundary(f *testing.F) {
	f.Add([]byte("* 1 FETCH (BODY[] {5}\r\nhello)\r\nA1 OK done\r\n"), 7)
	f.Add([]byte("* OK {12}\r\n{3}\r\nabc\r\nxyz\r\n"), 3)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		var whole, chunked responseBoundary
		whole.feed(in)
		step = max(1, step%64+1)
		for i := 0; i < len(in); i += step {
			chunked.feed(in[i:min(i+step, len(in))])
		}
		if whole.between() != chunked.between() || whole.literal != chunked.literal {
			t.Fatalf("whole: between %v literal %d; in chunks of %d: between %v literal %d",
				whole.between(), whole.literal, step, chunked.between(), chunked.literal)
		}
	})
}

// At the end of a drain, a session in IDLE and one not yet logged in each get a BYE, then
// the connection closes; Shutdown reports that sessions had to be ended.
func TestShutdownSaysBye(t *testing.T) {
	e := newEnv(t)
	idle := e.dial(t, true)
	idle.send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
	idle.expect("a OK ")
	idle.send("b SELECT INBOX")
	for !strings.HasPrefix(idle.expect(""), "b OK") {
	}
	idle.send("c IDLE")
	idle.expect("+ ")
	preauth := e.dial(t, true)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.servers[proxy.TLSImplicit].Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	for _, c := range []*client{idle, preauth} {
		if line := c.expect("* BYE "); line != strings.TrimSuffix(byeShutdown, "\r\n") {
			t.Errorf("got %q, want %q", line, byeShutdown)
		}
		c.expectEOF()
	}
}

// downstream holds its BYE back while a response, literal included, is being written.
func TestDownstreamByeAtBoundary(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	d := &downstream{Conn: server}
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(client)
		got <- string(b)
	}()
	d.Write([]byte("* 1 FETCH (BODY[] {10}\r\nhello"))
	ended := d.end()
	select {
	case <-ended:
		t.Fatal("BYE written inside a literal")
	default:
	}
	d.Write([]byte(" world)\r\n* 2 EXISTS\r\n"))
	<-ended
	if _, err := d.Write([]byte("* 3 EXISTS\r\n")); err == nil {
		t.Error("write after the BYE succeeded")
	}
	server.Close()
	want := "* 1 FETCH (BODY[] {10}\r\nhello world)\r\n* 2 EXISTS\r\n" + byeShutdown
	if s := <-got; s != want {
		t.Errorf("client read %q, want %q", s, want)
	}
}

// The client side of a spliced session is wrapped in a downstream; reading it must still
// take the TLS path that holds no buffer while the client is idle.
func TestDownstreamKeepsIdleReader(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := newWaitReader(&downstream{Conn: tls.Server(a, &tls.Config{})}).(*tlsReader); !ok {
		t.Error("a downstream over TLS is not read with tlsReader")
	}
}
