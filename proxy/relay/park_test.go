//go:build linux

package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// shortPark makes idle directions park after 20 ms for one test.
func shortPark(t *testing.T) {
	old := parkAfter
	parkAfter = 20 * time.Millisecond
	t.Cleanup(func() { parkAfter = old })
}

// waitParked waits until both directions of s are parked.
func waitParked(t *testing.T, s *Session) {
	t.Helper()
	waitFor(t, "both directions to park", func() bool { return s.parkedHalves() == 2 })
}

// waitParkedNow waits until at least n directions are parked, in all sessions.
func waitParkedNow(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d parked directions", n), func() bool { return parkedNow() >= n })
}

// Idle directions park and wake on data, as often as the session pauses, in both
// directions, over TCP, TLS, and TLS whose records arrive in pieces; bytes stay in order
// and the session ends normally.
func TestSpliceParksAndWakes(t *testing.T) {
	shortPark(t)
	for _, cs := range []side{sideTCP, sideTLS, sideDribble} {
		t.Run(string(cs), func(t *testing.T) {
			client, gwc := connect(t, cs, true)
			backend, gwb := connect(t, sideTCP, false)
			type result struct{ up, down int64 }
			done := make(chan result, 1)
			s := Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), nil, func(up, down int64) { done <- result{up, down} })
			var up, down int
			for i := range 5 {
				waitParked(t, s)
				big := string(bytes.Repeat([]byte{'a' + byte(i)}, 100000)) + "\r\n"
				exchange(t, client, backend, "c NOOP\r\n")
				exchange(t, backend, client, big)
				up, down = up+len("c NOOP\r\n"), down+len(big)
			}
			closeWriteTest(t, client)
			if b, err := io.ReadAll(backend); err != nil || len(b) != 0 {
				t.Fatalf("backend read %q, %v after the client's EOF", b, err)
			}
			closeWriteTest(t, backend)
			if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
				t.Fatalf("client read %q, %v after the backend's EOF", b, err)
			}
			select {
			case r := <-done:
				if r.up != int64(up) || r.down != int64(down) {
					t.Errorf("splice counted up %d, down %d; want %d, %d", r.up, r.down, up, down)
				}
			case <-time.After(halfCloseGrace / 2):
				t.Fatal("splice did not end")
			}
		})
	}
}

// A TLS record half sent when the client's direction parks is completed by its second half.
func TestSpliceParkedPartialRecord(t *testing.T) {
	shortPark(t)
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
	backend, gwb := tcpPair(t)
	s := Start(gw, bufio.NewReader(gw), gwb, bufio.NewReader(gwb), nil, func(int64, int64) {})
	t.Cleanup(s.Abort) // before tcpPair's cleanups close the sockets under it
	waitParked(t, s)
	hc.held = new(bytes.Buffer)
	io.WriteString(client, "d SELECT INBOX\r\n")
	rec := hc.held.Bytes()
	hc.held = nil
	before := spliceParks.Load()
	if _, err := peer.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	// Woken by the first half, it reads a partial record and parks again.
	waitFor(t, "the client direction to park again", func() bool { return spliceParks.Load() > before && s.parkedHalves() == 2 })
	if _, err := peer.Write(rec[len(rec)/2:]); err != nil {
		t.Fatal(err)
	}
	backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len("d SELECT INBOX\r\n"))
	if _, err := io.ReadFull(backend, got); err != nil || string(got) != "d SELECT INBOX\r\n" {
		t.Fatalf("backend read %q, %v", got, err)
	}
}

// Abort ends a session whose directions are both parked: they are taken back from the
// poller, run to their end, and the end callback comes.
func TestSpliceAbortParked(t *testing.T) {
	shortPark(t)
	client, gwc := connect(t, sideTLS, true)
	_, gwb := connect(t, sideTCP, false)
	done := make(chan struct{})
	s := Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), nil, func(int64, int64) { close(done) })
	waitParked(t, s)
	s.Abort()
	select {
	case <-done:
	case <-time.After(halfCloseGrace / 2):
		t.Fatal("parked session not ended by abort")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after abort")
	}
}

// Parked sessions hold no goroutine: what issue #8's idle-memory goal needs.
func TestSpliceParkedGoroutines(t *testing.T) {
	shortPark(t)
	const sessions = 50
	base := runtime.NumGoroutine()
	for range sessions {
		_, gwc := connect(t, sideTLS, true)
		_, gwb := connect(t, sideTCP, false)
		s := Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), nil, func(int64, int64) {})
		t.Cleanup(s.Abort)
	}
	waitParkedNow(t, 2*sessions)
	// A parked half's goroutine returns just after it parked; one kept per
	// parked half would keep this at 2*sessions or more.
	var n int
	defer func() {
		if t.Failed() {
			t.Logf("%d goroutines for %d parked sessions", n, sessions)
		}
	}()
	waitFor(t, fmt.Sprintf("at most %d goroutines for %d parked sessions", sessions/5, sessions), func() bool {
		n = runtime.NumGoroutine() - base
		return n <= sessions/5
	})
}

// End ends parked sessions like running ones: the goodbye, then EOF, and the end callback.
// Parked sessions still relay: data wakes a direction, which parks again once quiet.
func TestSpliceEndParked(t *testing.T) {
	shortPark(t)
	type session struct {
		client, backend net.Conn
		s               *Session
		done            chan struct{}
	}
	var sessions []session
	for range 2 {
		client, gwc := connect(t, sideTLS, true)
		backend, gwb := connect(t, sideTCP, false)
		done := make(chan struct{})
		s := Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), &lineFramer{}, func(int64, int64) { close(done) })
		sessions = append(sessions, session{client, backend, s, done})
	}
	waitParkedNow(t, 4)
	exchange(t, sessions[1].client, sessions[1].backend, "DONE\r\n")
	exchange(t, sessions[1].backend, sessions[1].client, "c OK IDLE terminated\r\n")
	waitParked(t, sessions[1].s)

	for _, x := range sessions {
		go x.s.End("* BYE bye\r\n")
	}
	for i, x := range sessions {
		x.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(x.client); string(b) != "* BYE bye\r\n" {
			t.Errorf("session %d: client read %q, %v; want the goodbye, then EOF", i, b, err)
		}
		select {
		case <-x.done:
		case <-time.After(halfCloseGrace / 2):
			t.Fatalf("session %d: parked session not ended by End", i)
		}
	}
}

// A backend lost while both directions are parked: the poller wakes the backend's
// direction, which tells the client.
func TestSpliceBackendLostParked(t *testing.T) {
	shortPark(t)
	client, gwc := connect(t, sideTLS, true)
	backend, gwb := connect(t, sideTCP, false)
	done := make(chan struct{})
	s := Start(gwc, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), &lossFramer{line: "* BYE lost\r\n"}, func(int64, int64) { close(done) })
	waitParked(t, s)
	backend.Close()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(client); string(b) != "* BYE lost\r\n" || err != nil {
		t.Errorf("client read %q, %v; want the line, then EOF", b, err)
	}
	client.Close()
	select {
	case <-done:
	case <-time.After(halfCloseGrace / 2):
		t.Fatal("session did not end")
	}
}

// parkedNow counts the halves waiting in the poller (tests).
func parkedNow() int {
	p, err := getPoller()
	if err != nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.wait)
}

// parkedHalves counts s's halves waiting in the poller (tests).
func (s *Session) parkedHalves() int {
	p, err := getPoller()
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, h := range []*half{s.up, s.down} {
		if _, ok := p.wait[h.parked.token]; ok && h.parked.registered {
			n++
		}
	}
	return n
}

// passthrough is a Passthrough, as a PROXY-protocol listener's connection is.
type passthrough struct{ net.Conn }

func (p passthrough) Wrapped() net.Conn { return p.Conn }

// A client behind a Passthrough wrapper (a PROXY-protocol listener) is read the way its
// socket is, and its idle session parks.
func TestPassthroughClientParks(t *testing.T) {
	_, raw := tcpPair(t)
	if got, want := fmt.Sprintf("%T", newWaitReader(passthrough{raw})), fmt.Sprintf("%T", newWaitReader(raw)); got != want {
		t.Errorf("a client behind a Passthrough is read with %s, its socket with %s", got, want)
	}
	shortPark(t)
	client, gwc := tcpPair(t)
	backend, gwb := tcpPair(t)
	s := Start(passthrough{gwc}, bufio.NewReader(gwc), gwb, bufio.NewReader(gwb), nil, func(int64, int64) {})
	waitParked(t, s)
	exchange(t, client, backend, "a NOOP\r\n")
	exchange(t, backend, client, "a OK\r\n")
	s.Abort()
}
