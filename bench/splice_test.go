package bench

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"flag"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/saslgate/saslgate/proxy/relay"
	"github.com/saslgate/saslgate/tls/certs"
)

// The splice variants of splice_variants_test.go between a TLS client and a
// plaintext backend on loopback, the way proxy/imap runs them:
//
//	go test ./bench -run '^$' -bench Splice -benchmem
//	go test ./bench -run '^$' -bench SpliceIdle -benchtime 1x   # memory per idle session
//
// Client, gateway and backend share the process; the variants differ only in
// the splice, so their differences are the splice's.

type variant struct {
	name  string
	start func(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader, end func(up, down int64))
	// coalesce: the gateway's TLS connection runs over relay.Coalesce, as a front end
	// wraps its client socket.
	coalesce bool
}

func blocking(f func(net.Conn, *bufio.Reader, net.Conn, *bufio.Reader) (int64, int64)) func(net.Conn, *bufio.Reader, net.Conn, *bufio.Reader, func(int64, int64)) {
	// The goroutine stands for conn.serve's, which runs the splice in proxy/imap.
	return func(c net.Conn, cbr *bufio.Reader, b net.Conn, bbr *bufio.Reader, end func(int64, int64)) {
		go func() { end(f(c, cbr, b, bbr)) }()
	}
}

var variants = []variant{
	{"holding", blocking(spliceHolding), false},
	{"nohold", blocking(spliceNoHold), false},
	{"nohold64k", blocking(spliceNoHold64), false},
	{"parked", spliceParked, false},
	{"relay", spliceRelay, false},
	{"relay-coalesce", spliceRelay, true},
}

// spliceRelay is proxy/relay itself, as proxy/imap starts it but without a
// Framer (BenchmarkGateway* measures it with IMAP's).
func spliceRelay(c net.Conn, cbr *bufio.Reader, b net.Conn, bbr *bufio.Reader, end func(int64, int64)) {
	relay.Start(c, cbr, b, bbr, nil, end)
}

// rig makes sessions in the state loggedIn leaves them: a TLS client whose
// AUTHENTICATE line went through a 4 KiB bufio.Reader on the gateway side,
// and a backend connection whose greeting went through another.
type rig struct {
	ln, bln   net.Listener
	serverTLS *tls.Config
	clientTLS *tls.Config
}

type session struct {
	client *tls.Conn // the mail client
	gw     *tls.Conn // the gateway's side of it
	cbr    *bufio.Reader
	bconn  net.Conn // the gateway's backend connection
	bbr    *bufio.Reader
	peer   net.Conn // the backend's side of it
	ended  chan [2]int64
}

func newRig(tb testing.TB) *rig {
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	r := &rig{
		serverTLS: certs.FromCertificate(cert).TLSConfig(),
		clientTLS: &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}},
	}
	if r.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	if r.bln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.ln.Close(); r.bln.Close() })
	return r
}

func (r *rig) session(tb testing.TB, v variant) *session {
	s := &session{ended: make(chan [2]int64, 1)}
	raw, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	graw, err := r.ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	if v.coalesce {
		graw = relay.Coalesce(graw)
	}
	s.client, s.gw = tls.Client(raw, r.clientTLS), tls.Server(graw, r.serverTLS)
	errc := make(chan error, 1)
	go func() { errc <- s.gw.Handshake() }()
	if err := s.client.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	io.WriteString(s.client, "a AUTHENTICATE OAUTHBEARER bixhPWFsaWNlLAFhdXRoPUJlYXJlciB0b2tlbgEB\r\n")
	s.cbr = bufio.NewReaderSize(s.gw, 4096)
	if _, err := s.cbr.ReadString('\n'); err != nil {
		tb.Fatal(err)
	}
	if s.bconn, err = net.Dial("tcp", r.bln.Addr().String()); err != nil {
		tb.Fatal(err)
	}
	if s.peer, err = r.bln.Accept(); err != nil {
		tb.Fatal(err)
	}
	io.WriteString(s.peer, "* OK backend ready\r\n")
	s.bbr = bufio.NewReader(s.bconn)
	if _, err := s.bbr.ReadString('\n'); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *session) splice(v variant) {
	cbr, bbr := s.cbr, s.bbr
	s.cbr, s.bbr = nil, nil // as loggedIn does: only the splice may keep them
	v.start(s.gw, cbr, s.bconn, bbr, func(up, down int64) { s.ended <- [2]int64{up, down} })
}

func (s *session) close() {
	s.client.Close()
	s.peer.Close()
}

// roundTrip sends a command through the splice and a reply back.
func (s *session) roundTrip(tb testing.TB) {
	if _, err := io.WriteString(s.client, "a NOOP\r\n"); err != nil {
		tb.Fatal(err)
	}
	readLine(tb, s.peer)
	if _, err := io.WriteString(s.peer, "a OK NOOP\r\n"); err != nil {
		tb.Fatal(err)
	}
	readLine(tb, s.client)
}

func readLine(tb testing.TB, c net.Conn) {
	var b [64]byte
	n := 0
	for n == 0 || b[n-1] != '\n' {
		k, err := c.Read(b[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += k
	}
}

// TestSpliceVariants checks every variant relays both ways, including the
// bytes pipelined into the bufio.Readers, the parked one after both its
// directions parked, and ends the session when the client leaves.
func TestSpliceVariants(t *testing.T) {
	r := newRig(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			s := r.session(t, v)
			io.WriteString(s.client, "b NOOP\r\n")
			io.WriteString(s.peer, "* 1 EXISTS\r\n")
			// Pipelined bytes already in the bufio.Readers when the splice starts.
			if _, err := s.cbr.Peek(1); err != nil {
				t.Fatal(err)
			}
			if _, err := s.bbr.Peek(1); err != nil {
				t.Fatal(err)
			}
			parks := parkCount()
			s.splice(v)
			readLine(t, s.peer)
			readLine(t, s.client)
			if v.name == "parked" {
				// Quiet for parkAfter, each direction parks once; the
				// other variants have no idle state to wait for.
				waitFor(t, "both directions to park", func() bool { return parkedAll(t, s) })
				if n := parkCount() - parks; n != 2 {
					t.Errorf("%d parks for a session whose 2 directions are parked, want 2", n)
				}
			}
			for range 3 {
				s.roundTrip(t)
			}
			big := bytes.Repeat([]byte("x"), 1<<20)
			go s.peer.Write(big)
			if _, err := io.ReadFull(s.client, make([]byte, len(big))); err != nil {
				t.Fatal(err)
			}
			s.client.Close()
			io.Copy(io.Discard, s.peer) // the splice half-closes towards the backend
			s.peer.Close()
			select {
			case n := <-s.ended:
				if n[1] < 1<<20 {
					t.Errorf("down = %d bytes, want ≥ 1 MiB", n[1])
				}
			case <-time.After(10 * time.Second):
				t.Fatal("session did not end")
			}
		})
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// parkedAll reports whether both directions of every one of sessions wait in
// the parker: the sockets under the gateway's client and backend connections.
func parkedAll(tb testing.TB, sessions ...*session) bool {
	p, err := sharedParker()
	if err != nil {
		tb.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range sessions {
		for _, c := range []net.Conn{s.gw.NetConn(), s.bconn} {
			if _, ok := p.parked[int32(fdOf(tb, c))]; !ok {
				return false
			}
		}
	}
	return true
}

func fdOf(tb testing.TB, c net.Conn) int {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		tb.Fatal(err)
	}
	return fd
}

func parkCount() int64 {
	p, err := sharedParker()
	if err != nil {
		return -1
	}
	return p.parks.Load()
}

// BenchmarkSpliceFetch: backend → client bulk copy (FETCH of large messages).
func BenchmarkSpliceFetch(b *testing.B) {
	r := newRig(b)
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			s := r.session(b, v)
			s.splice(v)
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB
			go func() {
				for {
					if _, err := s.peer.Write(chunk); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, len(chunk))
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				if _, err := io.ReadFull(s.client, buf); err != nil {
					b.Fatal(err)
				}
			}
			cpu.reportPerGB(b, len(chunk))
			s.close()
			<-s.ended
		})
	}
}

// BenchmarkSpliceUpload: client → backend bulk copy (APPEND), the TLS read side.
func BenchmarkSpliceUpload(b *testing.B) {
	r := newRig(b)
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			s := r.session(b, v)
			s.splice(v)
			go io.Copy(io.Discard, s.peer)
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4<<10)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				if _, err := s.client.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			cpu.reportPerGB(b, len(chunk))
			s.close()
			<-s.ended
		})
	}
}

// BenchmarkSpliceRoundTrip: one command and its reply (NOOP).
func BenchmarkSpliceRoundTrip(b *testing.B) {
	r := newRig(b)
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			s := r.session(b, v)
			s.splice(v)
			b.ReportAllocs()
			for b.Loop() {
				s.roundTrip(b)
			}
			s.close()
			<-s.ended
		})
	}
}

// BenchmarkSpliceIdle reports what an idle spliced session costs beyond its
// connections: heap and goroutine stacks per session, after GC, with n
// sessions that each carried one command and have been quiet since (for the
// parked variant, until every direction parked). Run it with -benchtime 1x.
func BenchmarkSpliceIdle(b *testing.B) {
	const n = 2000
	r := newRig(b)
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				heap, stack, gs := idleCost(b, r, v, n)
				b.ReportMetric(heap, "heapB/session")
				b.ReportMetric(stack, "stackB/session")
				b.ReportMetric(gs, "goroutines/session")
			}
		})
	}
}

var idleHeap = flag.String("idleheap", "", "BenchmarkSpliceIdle writes a heap profile `prefix`-<variant>.pprof with the sessions open")

func idleCost(b *testing.B, r *rig, v variant, n int) (heap, stack, goroutines float64) {
	sessions := make([]*session, n)
	for i := range sessions {
		sessions[i] = r.session(b, v)
	}
	m0, g0 := memNow()
	for _, s := range sessions {
		s.splice(v)
	}
	for _, s := range sessions {
		s.roundTrip(b)
	}
	switch v.name {
	case "parked":
		waitFor(b, "every direction to park", func() bool { return parkedAll(b, sessions...) })
	case "relay":
		// proxy/relay parks after 5 s and keeps its count to itself; its
		// sessions then have no goroutine left (its poller has one).
		waitFor(b, "every direction to park", func() bool { return runtime.NumGoroutine() <= g0+1 })
	}
	m1, g1 := memNow()
	if *idleHeap != "" {
		f, err := os.Create(*idleHeap + "-" + v.name + ".pprof")
		if err != nil {
			b.Fatal(err)
		}
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	var wg sync.WaitGroup
	for _, s := range sessions {
		s.close()
		wg.Go(func() {
			select {
			case <-s.ended:
			case <-time.After(2 * halfCloseGrace):
				b.Error("a session did not end")
			}
		})
	}
	wg.Wait()
	runtime.KeepAlive(sessions)
	perSession := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return perSession(m0.HeapAlloc, m1.HeapAlloc), perSession(m0.StackInuse, m1.StackInuse), float64(g1-g0) / float64(n)
}

func memNow() (runtime.MemStats, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m, runtime.NumGoroutine()
}
