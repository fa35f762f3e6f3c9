package relay

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// lineFramer is a Framer for a protocol of CRLF-ended responses.
type lineFramer struct{ open bool }

func (f *lineFramer) Feed(p []byte) {
	if len(p) > 0 {
		f.open = p[len(p)-1] != '\n'
	}
}

func (f *lineFramer) Between() bool { return !f.open }

// lossFramer is a lineFramer with line for a lost backend.
type lossFramer struct {
	lineFramer
	line string
}

func (f *lossFramer) Lost() string { return f.line }

// downstream holds the goodbye back while a response is being written.
func TestDownstreamGoodbyeAtBoundary(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	d := &downstream{Conn: server, framer: &lineFramer{}}
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(client)
		got <- string(b)
	}()
	d.Write([]byte("* 1 FETCH (BODY[] hel"))
	ended := d.end("* BYE bye\r\n")
	select {
	case <-ended:
		t.Fatal("goodbye written inside a response")
	default:
	}
	d.Write([]byte("lo)\r\n* 2 EXISTS\r\n"))
	<-ended
	if _, err := d.Write([]byte("* 3 EXISTS\r\n")); err == nil {
		t.Error("write after the goodbye succeeded")
	}
	server.Close()
	want := "* 1 FETCH (BODY[] hello)\r\n* 2 EXISTS\r\n* BYE bye\r\n"
	if s := <-got; s != want {
		t.Errorf("client read %q, want %q", s, want)
	}
}

// The client side of a session with a Framer is wrapped in a downstream; reading it must
// still take the TLS path that holds no buffer while the client is idle.
func TestDownstreamKeepsIdleReader(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := newWaitReader(&downstream{Conn: tls.Server(a, &tls.Config{})}).(*tlsReader); !ok {
		t.Error("a downstream over TLS is not read with tlsReader")
	}
}

// When the backend's side ends while the client's goes on, a LossFramer's line reaches the
// client at a response boundary, then EOF; otherwise the client just sees EOF.
func TestSpliceBackendLost(t *testing.T) {
	const bye = "* BYE lost\r\n"
	for _, tc := range []struct {
		name       string
		framer     Framer
		sent       string // the backend's last bytes
		clientDone bool   // the client half-closed first
		reset      bool   // the backend resets rather than closes
		want       string // what the client reads after sent
	}{
		{"at a boundary", &lossFramer{line: bye}, "* 1 EXISTS\r\n", false, false, bye},
		{"reset", &lossFramer{line: bye}, "* 1 EXISTS\r\n", false, true, bye},
		{"nothing sent", &lossFramer{line: bye}, "", false, false, bye},
		{"inside a response", &lossFramer{line: bye}, "* 1 FETCH (BODY[] hel", false, false, ""},
		{"framer has no line", &lossFramer{}, "* 1 EXISTS\r\n", false, false, ""},
		{"not a LossFramer", &lineFramer{}, "* 1 EXISTS\r\n", false, false, ""},
		{"no framer", nil, "* 1 EXISTS\r\n", false, false, ""},
		{"client left first", &lossFramer{line: bye}, "* 1 EXISTS\r\n", true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noPark(t)
			client, gwc := connect(t, sideTLS, true)
			backend, gwb := connect(t, sideTCP, false)
			done := make(chan [2]int64, 1)
			Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), tc.framer, func(up, down int64) { done <- [2]int64{up, down} })
			if tc.sent != "" {
				exchange(t, backend, client, tc.sent)
			}
			if tc.clientDone {
				closeWriteTest(t, client)
				if b, err := io.ReadAll(backend); err != nil || len(b) != 0 {
					t.Fatalf("backend read %q, %v after the client's EOF", b, err)
				}
			}
			if tc.reset {
				backend.(*net.TCPConn).SetLinger(0)
			}
			backend.Close()
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if b, err := io.ReadAll(client); string(b) != tc.want || err != nil {
				t.Errorf("client read %q, %v; want %q, then EOF", b, err, tc.want)
			}
			client.Close() // rather than wait out halfCloseGrace
			select {
			case n := <-done:
				// The line is the relay's, not the backend's.
				if n[1] != int64(len(tc.sent)) {
					t.Errorf("down = %d bytes, want %d", n[1], len(tc.sent))
				}
			case <-time.After(halfCloseGrace / 2):
				t.Fatal("session did not end")
			}
		})
	}
}
