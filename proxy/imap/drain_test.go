package imap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/saslgate/saslgate/backends"
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
			r.Feed([]byte(tc.in[:cut]))
			r.Feed([]byte(tc.in[cut:]))
			if got := r.Between(); got != tc.between {
				t.Errorf("%s, cut at %d: between = %v, want %v", tc.name, cut, got, tc.between)
				break
			}
		}
		// And byte by byte.
		var r responseBoundary
		for i := range len(tc.in) {
			r.Feed([]byte{tc.in[i]})
		}
		if r.Between() != tc.between {
			t.Errorf("%s, byte by byte: between = %v, want %v", tc.name, r.Between(), tc.between)
		}
	}
}

// FuzzResponseBoundary: how the backend's bytes are chunked never changes where responses end.
func FuzzResponseBoundary(f *testing.F) {
	f.Add([]byte("* 1 FETCH (BODY[] {5}\r\nhello)\r\nA1 OK done\r\n"), 7)
	f.Add([]byte("* OK {12}\r\n{3}\r\nabc\r\nxyz\r\n"), 3)
	f.Add([]byte("* BYE Logging out\r\nA1 OK LOGOUT completed\r\n"), 2)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		var whole, chunked responseBoundary
		whole.Feed(in)
		step = max(1, step%64+1)
		for i := 0; i < len(in); i += step {
			chunked.Feed(in[i:min(i+step, len(in))])
		}
		if whole.Between() != chunked.Between() || whole.lines.Literal() != chunked.lines.Literal() || whole.bye != chunked.bye {
			t.Fatalf("whole: between %v literal %d bye %v; in chunks of %d: between %v literal %d bye %v",
				whole.Between(), whole.lines.Literal(), whole.bye, step, chunked.Between(), chunked.lines.Literal(), chunked.bye)
		}
	})
}

// At the end of a drain, a session in IDLE and one not yet logged in each get a BYE, then
// the connection closes; Shutdown reports that sessions had to be ended.
func TestShutdownSaysBye(t *testing.T) {
	e := newEnv(t)
	idle := e.dial(t, true)
	idle.Send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	idle.Expect("a OK ")
	idle.Send("b SELECT INBOX")
	for !strings.HasPrefix(idle.Expect(""), "b OK") {
	}
	idle.Send("c IDLE")
	idle.Expect("+ ")
	preauth := e.dial(t, true)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.Servers[proxy.TLSImplicit].Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	for _, c := range []*client{idle, preauth} {
		if line := c.Expect("* BYE "); line != strings.TrimSuffix(byeShutdown, "\r\n") {
			t.Errorf("got %q, want %q", line, byeShutdown)
		}
		c.ExpectEOF()
	}
}

// The framer notes the server's own untagged BYE, wherever the chunks split it; a BYE inside
// a literal, a tagged line or another response is none.
func TestResponseBoundaryBye(t *testing.T) {
	for _, tc := range []struct {
		in  string
		bye bool
	}{
		{"", false},
		{"* OK still here\r\n", false},
		{"* BYE Logging out\r\na OK Logout completed.\r\n", true},
		{"* BYE Autologout; idle for too long\r\n", true},
		{"* bye server shutting down\r\n", true},
		{"* BYE\r\n", true},
		{"* BYE Logging o", false}, // not a whole line yet
		{"* BYEBYE\r\n", false},
		{"a BYE\r\n", false},
		{"* 1 FETCH (BODY[] {8}\r\n* BYE x\r\n)\r\n", false},
		{"* OK [ALERT] * BYE\r\n", false},
	} {
		for cut := 0; cut <= len(tc.in); cut++ {
			var r responseBoundary
			r.Feed([]byte(tc.in[:cut]))
			r.Feed([]byte(tc.in[cut:]))
			want := byeLost
			if tc.bye {
				want = ""
			}
			if got := r.Lost(); got != want {
				t.Errorf("%q, cut at %d: Lost = %q, want %q", tc.in, cut, got, want)
				break
			}
		}
	}
}

// fakeBackend makes the servers' backend logins succeed at once, each on a loopback
// connection whose far end comes out of the channel for the test to play the backend.
func fakeBackend(t *testing.T) (envOption, <-chan net.Conn) {
	peers := make(chan net.Conn, 1)
	return func(s *Server) {
		s.Dial = func(ctx context.Context, _ string, _ backends.Secret) (*backends.IMAPSession, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			defer ln.Close()
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				return nil, err
			}
			peer, err := ln.Accept()
			if err != nil {
				nc.Close()
				return nil, err
			}
			t.Cleanup(func() { peer.Close() })
			peers <- peer
			return &backends.IMAPSession{Conn: nc, Reader: bufio.NewReader(nc)}, nil
		}
	}, peers
}

// loginFake logs c in through fakeBackend and returns the backend's end of the session.
func loginFake(t *testing.T, e *env, c *client, peers <-chan net.Conn) net.Conn {
	t.Helper()
	c.Send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	c.Expect("a OK ")
	peer := <-peers
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	return peer
}

// A client whose backend goes away mid-session gets "* BYE" at a response boundary, unless
// the backend said BYE itself (Dovecot before LOGOUT's tagged OK, and on autologout); a
// backend lost inside a literal leaves nowhere to put one, and the connection just closes.
func TestBackendLostBye(t *testing.T) {
	const lost = "* BYE Backend connection lost"
	for _, tc := range []struct {
		name    string
		command string   // C: read by the backend before it answers
		backend string   // what the backend sends before it closes
		want    []string // S: what the client reads after the login
		rest    string   // what the client reads after want, until EOF
	}{
		{"dropped after a response", "b NOOP", "b OK NOOP completed\r\n", []string{"b OK NOOP completed", lost}, ""},
		{"dropped while idle", "", "", []string{lost}, ""},
		{"logout", "b LOGOUT", "* BYE Logging out\r\nb OK Logout completed.\r\n", []string{"* BYE Logging out", "b OK Logout completed."}, ""},
		{"autologout", "", "* BYE Autologout; idle for too long\r\n", []string{"* BYE Autologout; idle for too long"}, ""},
		{"dropped inside a literal", "b FETCH 1 BODY[]", "* 1 FETCH (BODY[] {20}\r\nhello", []string{"* 1 FETCH (BODY[] {20}"}, "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt, peers := fakeBackend(t)
			e := newEnv(t, opt)
			c := e.dial(t, true)
			peer := loginFake(t, e, c, peers)
			if tc.command != "" {
				c.Send(tc.command)
				line, err := bufio.NewReader(peer).ReadString('\n')
				if err != nil || line != tc.command+"\r\n" {
					t.Fatalf("backend read %q, %v; want %q", line, err, tc.command)
				}
			}
			if _, err := io.WriteString(peer, tc.backend); err != nil {
				t.Fatal(err)
			}
			peer.Close()
			for _, want := range tc.want {
				if got := c.Expect(want); got != want {
					t.Errorf("got %q, want %q", got, want)
				}
			}
			if rest, err := io.ReadAll(c.BR); string(rest) != tc.rest || err != nil {
				t.Errorf("then read %q, %v; want %q, then EOF", rest, err, tc.rest)
			}
		})
	}
}

// A drain that begins inside a literal says BYE once the response is complete, not inside it.
func TestShutdownByeAfterLiteral(t *testing.T) {
	opt, peers := fakeBackend(t)
	e := newEnv(t, opt)
	c := e.dial(t, true)
	peer := loginFake(t, e, c, peers)
	if _, err := io.WriteString(peer, "* 1 FETCH (BODY[] {11}\r\nhello"); err != nil {
		t.Fatal(err)
	}
	c.Expect("* 1 FETCH (BODY[] {11}")
	b := make([]byte, 5)
	if _, err := io.ReadFull(c.BR, b); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want the literal's first bytes", b, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.Servers[proxy.TLSImplicit].Shutdown(ctx) }()
	// The listener closes just before the sessions are told to end: from then on End is
	// (about to be) waiting for the literal. Should it come later, its BYE still belongs
	// after the response.
	for {
		nc, err := net.Dial("tcp", e.ImplAddr)
		if err != nil {
			break
		}
		nc.Close()
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := io.WriteString(peer, " world)\r\n"); err != nil {
		t.Fatal(err)
	}
	if line := c.Expect(" world)"); line != " world)" {
		t.Errorf("got %q, want the rest of the response", line)
	}
	if line := c.Expect("* BYE "); line != strings.TrimSuffix(byeShutdown, "\r\n") {
		t.Errorf("got %q, want %q", line, byeShutdown)
	}
	c.ExpectEOF()
	if err := <-shut; !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want Canceled", err)
	}
}

// BenchmarkResponseBoundary: the framer over what a spliced session relays most, in the
// relay's 64 KiB reads: a FETCH of flags for a large mailbox (short lines, every byte
// looked at) and a FETCH of a message body (a literal, skipped).
func BenchmarkResponseBoundary(b *testing.B) {
	var flags strings.Builder
	for i := 1; flags.Len() < 1<<20; i++ {
		fmt.Fprintf(&flags, "* %d FETCH (UID %d FLAGS (\\Seen \\Answered))\r\n", i, 1000+i)
	}
	flags.WriteString("A1 OK FETCH completed\r\n")
	body := "* 1 FETCH (BODY[] {1048576}\r\n" + strings.Repeat("x", 1<<20) + ")\r\nA2 OK FETCH completed\r\n"
	for _, tc := range []struct{ name, in string }{{"lines", flags.String()}, {"literal", body}} {
		b.Run(tc.name, func(b *testing.B) {
			in := []byte(tc.in)
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				var r responseBoundary
				for p := in; len(p) > 0; {
					k := min(len(p), 64<<10)
					r.Feed(p[:k])
					p = p[k:]
				}
				if !r.Between() {
					b.Fatal("the stream did not end between responses")
				}
			}
		})
	}
}

// Every spliced session holds a responseBoundary: it stays in the 48-byte size class.
func TestResponseBoundarySize(t *testing.T) {
	if n := unsafe.Sizeof(responseBoundary{}); n > 48 {
		t.Errorf("responseBoundary is %d bytes, want at most 48", n)
	}
}
