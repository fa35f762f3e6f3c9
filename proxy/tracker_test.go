package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// echoSession holds its connection open until the client closes it or it is aborted.
type echoSession struct{ nc net.Conn }

func (s *echoSession) Serve(release func()) {
	defer release()
	buf := make([]byte, 64)
	for {
		if _, err := s.nc.Read(buf); err != nil {
			return
		}
	}
}

func (s *echoSession) Abort() { s.nc.Close() }

// End says goodbye as a protocol would, then closes.
func (s *echoSession) End() {
	s.nc.Write([]byte("bye\n"))
	s.nc.Close()
}

func startTracker(t *testing.T) (*Tracker, string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracker{}
	errc := make(chan error, 1)
	go func() {
		errc <- tr.Serve(ln, Accept{Log: slogDiscard()}, func(nc net.Conn) Session { return &echoSession{nc: nc} })
	}()
	return tr, ln.Addr().String(), errc
}

// Shutdown waits for an open session; when its context ends first, the
// session is ended (Session.End) and Shutdown reports the context's error.
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
	if b, err := io.ReadAll(c); string(b) != "bye\n" || err != nil {
		t.Errorf("after Shutdown's deadline the session sent %q, %v; want its End's goodbye, then EOF", b, err)
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

// addrSession reports the connection's addresses, as the front ends see them, and then
// holds the connection like echoSession.
type addrSession struct {
	echoSession
	addrs chan<- [2]string
}

func (s *addrSession) Serve(release func()) {
	s.addrs <- [2]string{s.nc.RemoteAddr().String(), s.nc.LocalAddr().String()}
	s.echoSession.Serve(release)
}

func serveAccept(t *testing.T, a Accept, addrs chan<- [2]string) (*Tracker, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracker{}
	go tr.Serve(ln, a, func(nc net.Conn) Session { return &addrSession{echoSession{nc}, addrs} })
	t.Cleanup(func() { tr.Close() })
	return tr, ln.Addr().String()
}

// closedByPeer reports whether the server closes c without sending anything.
func closedByPeer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestTrackerProxyProtocol(t *testing.T) {
	addrs := make(chan [2]string, 4)
	l := ListenerConfig{Name: "imaps", ProxyProtocol: true, ProxyTrustedNetworks: []string{"127.0.0.0/8"}}
	_, addr := serveAccept(t, Accept{Listener: l, Log: slogDiscard()}, addrs)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := AppendProxyHeaderV2(nil, netip.MustParseAddrPort("203.0.113.5:40001"), netip.MustParseAddrPort("198.51.100.1:993"))
	c.Write(hdr)
	if got := <-addrs; got != [2]string{"203.0.113.5:40001", "198.51.100.1:993"} {
		t.Errorf("session sees %v, want the PROXY header's addresses", got)
	}

	// A v1 UNKNOWN (a load balancer's health check) keeps the socket's addresses.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("PROXY UNKNOWN\r\n"))
	if got := <-addrs; got[0] != c2.LocalAddr().String() {
		t.Errorf("UNKNOWN: session sees remote %v, want %v", got[0], c2.LocalAddr())
	}

	// No header, or a bad one: closed without a session.
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.Write([]byte("A1 CAPABILITY\r\n"))
	if !closedByPeer(t, c3) {
		t.Error("connection without a PROXY header not closed")
	}
	select {
	case got := <-addrs:
		t.Errorf("session started for a connection without a header: %v", got)
	default:
	}
}

func TestTrackerProxyProtocolUntrusted(t *testing.T) {
	addrs := make(chan [2]string, 1)
	l := ListenerConfig{Name: "imaps", ProxyProtocol: true, ProxyTrustedNetworks: []string{"10.0.0.0/8"}}
	_, addr := serveAccept(t, Accept{Listener: l, Log: slogDiscard()}, addrs)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A forged header from outside the trusted networks must not be believed.
	c.Write(AppendProxyHeaderV2(nil, netip.MustParseAddrPort("203.0.113.5:1"), netip.MustParseAddrPort("198.51.100.1:993")))
	if !closedByPeer(t, c) {
		t.Error("connection from an untrusted peer not closed")
	}
	if len(addrs) != 0 {
		t.Errorf("session started: %v", <-addrs)
	}
}

func TestTrackerConnectionLimits(t *testing.T) {
	addrs := make(chan [2]string, 8)
	a := Accept{
		Limits:  Limits{MaxConnections: 3, MaxConnectionsPerIP: 2},
		Refusal: "* BYE %s\r\n",
		Log:     slogDiscard(),
	}
	_, addr := serveAccept(t, a, addrs)
	var open []net.Conn
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for range 2 {
		open = append(open, dial())
		<-addrs
	}
	over := dial()
	over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(over).ReadString('\n'); line != "* BYE Too many connections from your address\r\n" {
		t.Errorf("third connection from one address got %q, want the per-address refusal", line)
	}
	// Closing one gives its place back.
	open[0].Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c := dial()
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			break // held open: admitted
		}
		if time.Now().After(deadline) {
			t.Fatal("place not given back after a close")
		}
	}
	// Two are open from 127.0.0.1; a third from 127.0.0.2 fills the listener; the next one
	// from 127.0.0.2 hits the listener's own limit, and is told so, not that its address has
	// too many.
	dialFrom2 := func() net.Conn {
		c, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	<-addrs // the one the loop left open
	dialFrom2()
	<-addrs
	other := dialFrom2()
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(other).ReadString('\n'); line != "* BYE Too many connections to this server, try again later\r\n" {
		t.Errorf("connection over max_connections got %q, want the server-wide refusal", line)
	}
}
