package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/tls/certs"
)

// The splice tests put the relay between two peers on loopback, each side
// plain TCP or TLS as a front end can meet them, and check every byte arrives,
// in order, with half-closes passed on.

// spliceTLS is a server and a client configuration that trust each other.
var spliceTLS = sync.OnceValues(func() (server, client *tls.Config) {
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	return certs.FromCertificate(cert).TLSConfig(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
})

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// side is how one end of the splice is connected.
type side string

const (
	sideTCP     side = "tcp"
	sideTLS     side = "tls"
	sideDribble side = "tls-dribble"  // TLS whose records reach the gateway in random pieces
	sideCoal    side = "tls-coalesce" // TLS over Coalesce on the gateway's side, as a front end wraps a client
)

// connect returns a peer and the gateway's end of a connection to it. The
// gateway is the TLS server toward a client and the TLS client toward a backend.
func connect(t *testing.T, s side, gatewayIsServer bool) (peer, gw net.Conn) {
	t.Helper()
	peer, gw = tcpPair(t)
	if s == sideDribble {
		out := peer
		var in net.Conn
		peer, in = tcpPair(t)
		go dribble(out, in)
		go func() { io.Copy(in, out); in.(*net.TCPConn).CloseWrite() }()
	}
	if s == sideTCP {
		return peer, gw
	}
	srv, cli := spliceTLS()
	var p, g *tls.Conn
	if s == sideCoal {
		gw = Coalesce(gw)
	}
	if gatewayIsServer {
		p, g = tls.Client(peer, cli), tls.Server(gw, srv)
	} else {
		p, g = tls.Server(peer, srv), tls.Client(gw, cli)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Handshake() }()
	if err := g.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return p, g
}

// dribble copies src to dst in pieces of 1 to 3000 bytes, so that TLS
// records arrive split at every possible place, then half-closes dst.
func dribble(dst, src net.Conn) {
	rnd := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3000)
	for {
		n, err := src.Read(buf[:1+rnd.IntN(len(buf))])
		for b := buf[:n]; len(b) > 0; {
			k := min(len(b), 1+rnd.IntN(64))
			if _, werr := dst.Write(b[:k]); werr != nil {
				return
			}
			b = b[k:]
		}
		if err != nil {
			dst.(*net.TCPConn).CloseWrite()
			return
		}
	}
}

// stream is size bytes that a peer writes in chunks from 1 byte to 40 KB.
func stream(seed uint64, size int) (data []byte, chunks []int) {
	rnd := rand.New(rand.NewPCG(seed, seed))
	data = make([]byte, size)
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	for left := size; left > 0; {
		n := 1 + rnd.IntN(40000)
		if rnd.IntN(4) == 0 {
			n = 1 + rnd.IntN(16)
		}
		n = min(n, left)
		chunks = append(chunks, n)
		left -= n
	}
	return data, chunks
}

func writeChunks(c net.Conn, data []byte, chunks []int) error {
	for _, n := range chunks {
		if _, err := c.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// exchange sends line from a to b through the splice and checks it arrives whole.
func exchange(t *testing.T, a, b net.Conn, line string) {
	t.Helper()
	if _, err := io.WriteString(a, line); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(line))
	if _, err := io.ReadFull(b, got); err != nil || string(got) != line {
		t.Fatalf("read %q, %v; want %q", got, err, line)
	}
}

func closeWriteTest(t *testing.T, c net.Conn) {
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Error(err)
	}
}

// splice is Start waiting for the end.
func splice(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader) (up, down int64) {
	done := make(chan struct{})
	Start(client, cbr, backend, bbr, nil, func(u, d int64) { up, down = u, d; close(done) })
	<-done
	return up, down
}

// A session runs like LOGOUT: the client sends all it has and half-closes;
// only once the backend sees that EOF does it send its answer and close.
// Bytes pipelined behind AUTHENTICATE (and behind the backend's tagged OK)
// come first.
func TestSpliceIntegrity(t *testing.T) {
	const size = 1 << 20
	for _, cs := range []side{sideTCP, sideTLS, sideDribble, sideCoal} {
		for _, bs := range []side{sideTCP, sideTLS} {
			t.Run(string(cs)+"-"+string(bs), func(t *testing.T) {
				client, gwc := connect(t, cs, true)
				backend, gwb := connect(t, bs, false)

				// What the front end's readers hold when the splice starts.
				if _, err := io.WriteString(client, "a AUTHENTICATE XOAUTH2 x\r\nb NOOP\r\n"); err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(backend, "a OK Logged in\r\n* 1 EXISTS\r\n"); err != nil {
					t.Fatal(err)
				}
				cbr, bbr := bufio.NewReaderSize(gwc, 4096), bufio.NewReaderSize(gwb, 4096)
				for br, want := range map[*bufio.Reader]string{cbr: "b NOOP\r\n", bbr: "* 1 EXISTS\r\n"} {
					br.ReadString('\n')
					// Wait until the pipelined line is in the reader.
					for br.Buffered() < len(want) {
						if _, err := br.Peek(br.Buffered() + 1); err != nil {
							t.Fatal(err)
						}
					}
				}

				type result struct{ up, down int64 }
				done := make(chan result, 1)
				go func() {
					up, down := splice(gwc, cbr, gwb, bbr)
					done <- result{up, down}
				}()

				upData, upChunks := stream(1, size)
				downData, downChunks := stream(2, size)
				errc := make(chan error, 1)
				go func() {
					errc <- writeChunks(client, upData, upChunks)
					closeWriteTest(t, client)
				}()
				gotUp, err := io.ReadAll(backend)
				if err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if err := writeChunks(backend, downData, downChunks); err != nil {
					t.Fatal(err)
				}
				closeWriteTest(t, backend)
				gotDown, err := io.ReadAll(client)
				if err != nil {
					t.Fatal(err)
				}

				wantUp := append([]byte("b NOOP\r\n"), upData...)
				wantDown := append([]byte("* 1 EXISTS\r\n"), downData...)
				if !bytes.Equal(gotUp, wantUp) {
					t.Errorf("backend got %d bytes, want %d (first difference at %d)", len(gotUp), len(wantUp), firstDiff(gotUp, wantUp))
				}
				if !bytes.Equal(gotDown, wantDown) {
					t.Errorf("client got %d bytes, want %d (first difference at %d)", len(gotDown), len(wantDown), firstDiff(gotDown, wantDown))
				}
				select {
				case r := <-done:
					if r.up != int64(len(wantUp)) || r.down != int64(len(wantDown)) {
						t.Errorf("splice counted up %d, down %d; want %d, %d", r.up, r.down, len(wantUp), len(wantDown))
					}
				case <-time.After(halfCloseGrace / 2):
					t.Fatal("splice did not return after both sides closed")
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// holdConn passes writes through, or keeps them while held, so that
// several TLS records can reach the other side in one segment.
type holdConn struct {
	net.Conn
	held *bytes.Buffer
}

func (c *holdConn) Write(b []byte) (int, error) {
	if c.held != nil {
		return c.held.Write(b)
	}
	return c.Conn.Write(b)
}

// A command that came in its own TLS record, in the same segment as the
// AUTHENTICATE line's record, is inside crypto/tls, not in the bufio.Reader
// and not in the socket: it must still reach the backend without the client
// sending more.
func TestSpliceTLSBufferedRecord(t *testing.T) {
	peer, gwc := tcpPair(t)
	hc := &holdConn{Conn: peer}
	srv, cli := spliceTLS()
	client, gw := tls.Client(hc, cli), tls.Server(gwc, srv)
	errc := make(chan error, 1)
	go func() { errc <- client.Handshake() }()
	if err := gw.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	hc.held = new(bytes.Buffer)
	io.WriteString(client, "a AUTHENTICATE XOAUTH2 x\r\n")
	io.WriteString(client, "b NOOP\r\n")
	if _, err := peer.Write(hc.held.Bytes()); err != nil {
		t.Fatal(err)
	}
	hc.held = nil

	cbr := bufio.NewReaderSize(gw, 4096)
	if line, err := cbr.ReadString('\n'); err != nil || line != "a AUTHENTICATE XOAUTH2 x\r\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	if n := cbr.Buffered(); n != 0 {
		t.Fatalf("bufio.Reader holds %d bytes; the test needs the second record inside crypto/tls", n)
	}
	backend, gwb := tcpPair(t)
	go splice(gw, cbr, gwb, bufio.NewReader(gwb))
	backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len("b NOOP\r\n"))
	if _, err := io.ReadFull(backend, got); err != nil || string(got) != "b NOOP\r\n" {
		t.Fatalf("backend read %q, %v", got, err)
	}
	client.Close()
	backend.Close()
}

func init() {
	// Set before any splice runs: getSpliceBuf and putSpliceBuf read it unguarded.
	spliceBufsCount = new(bufCount)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noPark keeps idle directions on their goroutines for one test.
func noPark(t *testing.T) {
	old := parkAfter
	parkAfter = time.Hour
	t.Cleanup(func() { parkAfter = old })
}

// Idle sessions hold no splice buffer: once both directions of every session
// are back to waiting for data, no buffer is out of the pool.
func TestSpliceIdleHoldsNoBuffer(t *testing.T) {
	// A parked direction holds nothing by construction, and parking would end
	// the wait that this test is about.
	noPark(t)
	const sessions = 64
	taken := spliceBufsCount.taken.Load()
	for range sessions {
		client, gwc := connect(t, sideTLS, true)
		backend, gwb := connect(t, sideTCP, false)
		s := Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), nil, func(int64, int64) {})
		t.Cleanup(s.Abort)
		// One exchange each way, then both directions wait.
		line := []byte("x NOOP\r\n")
		for _, p := range [][2]net.Conn{{client, backend}, {backend, client}} {
			if _, err := p[0].Write(line); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(p[1], make([]byte, len(line))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The buffers counted are those of getSpliceBuf: the exchanges went through it.
	if n := spliceBufsCount.taken.Load() - taken; n < 2*sessions {
		t.Fatalf("%d sessions took %d splice buffers, want at least one per direction", sessions, n)
	}
	// A direction that held a buffer while it waits would keep this above zero
	// for as long as its session is idle (an hour here).
	var out int64
	defer func() {
		if t.Failed() {
			t.Logf("%d splice buffers out of the pool for %d idle sessions", out, sessions)
		}
	}()
	waitFor(t, "no splice buffer out of the pool", func() bool {
		out = spliceBufsCount.out.Load()
		return out == 0
	})
}

// waitingReader is a half's reader, marked so that stacks show which goroutines
// wait in it (blockedIn).
type waitingReader struct{ waitReader }

func (r *waitingReader) read(deadline time.Time) (*[]byte, int, error) {
	return r.waitReader.read(deadline)
}

// blockedIn counts the goroutines blocked on the network with fn on their stack.
func blockedIn(fn string) int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[IO wait") && strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// Closing both connections ends a splice whose directions are blocked waiting for data.
func TestSpliceAbort(t *testing.T) {
	for _, cs := range []side{sideTCP, sideTLS} {
		t.Run(string(cs), func(t *testing.T) {
			_, gwc := connect(t, cs, true)
			_, gwb := connect(t, sideTCP, false)
			done := make(chan struct{})
			// Start, with readers that mark the halves' goroutines.
			s := &Session{client: gwc, backend: gwb, running: 2, parkAfter: parkAfter, ended: func(int64, int64) { close(done) }}
			s.up = newHalf(s, gwb, gwc, nil)
			s.down = newHalf(s, gwc, gwb, nil)
			for _, h := range []*half{s.up, s.down} {
				h.r = &waitingReader{h.r}
				go h.run()
			}
			waitFor(t, "both directions to block in their reads", func() bool { return blockedIn("(*waitingReader).read") == 2 })
			gwc.Close()
			gwb.Close()
			select {
			case <-done:
			case <-time.After(halfCloseGrace / 2):
				t.Fatal("splice still running after both connections closed")
			}
		})
	}
}
