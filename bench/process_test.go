package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/bench/internal/floor"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/proxy/relay"
	"github.com/saslgate/saslgate/tls/certs"
)

// BenchmarkGatewayProcess runs the gateway in a process of its own (this test binary,
// started again as TestGatewayProcessChild) between a client and the scripted backend in
// this one, and reports the gateway's CPU alone, as imapbench's "proxy CPU" does: s/GB of
// FETCH literals relayed, ms per login. The gateway is
//
//   - imap: the real proxy/imap.Server of BenchmarkGatewayLogin (stub backend dial), whose
//     handshake runs over relay.Coalesce as every splicing front end's does (the
//     "imap-coalesce" row of bench/README.md's second step, before the front ends did);
//   - relay: proxy/relay alone behind a TLS handshake, the client's FETCH relayed as it
//     comes (no login);
//   - relay-coalesce: relay over relay.Coalesce, as a front end wraps its client socket;
//   - floor, plain, handshake: the least a Go program does for the same exchange
//     (bench/internal/floor): with TLS, without, and the TLS handshake and greeting alone.
//
// CPU time is what other processes on the machine disturb least; it still includes the
// Go runtime's own (GC, the scheduler's spinning).
func BenchmarkGatewayProcess(b *testing.B) {
	backend := startScriptedBackend(b)
	const size = 1 << 20
	for _, mode := range processFetchModes {
		b.Run("fetch/"+mode, func(b *testing.B) {
			gw := startGatewayProcess(b, mode, backend)
			c := gw.connect(b, mode)
			defer c.c.Close()
			b.SetBytes(size)
			cpu := gw.cpu(b)
			for b.Loop() {
				c.cmd(b, "FETCH "+strconv.Itoa(size))
			}
			b.ReportMetric((gw.cpu(b)-cpu).Seconds()/(float64(b.N)*size/1e9), "proxy-cpu-s/GB")
		})
	}
	for _, mode := range processLoginModes {
		b.Run("login/"+mode, func(b *testing.B) {
			gw := startGatewayProcess(b, mode, backend)
			cpu := gw.cpu(b)
			for b.Loop() {
				gw.session(b, mode)
			}
			b.ReportMetric(float64((gw.cpu(b)-cpu).Microseconds())/1e3/float64(b.N), "proxy-cpu-ms/login")
		})
	}
}

// The gateways of BenchmarkGatewayProcess's fetch and login rows.
var (
	processFetchModes = []string{"imap", "relay", "relay-coalesce", "floor", "plain"}
	processLoginModes = []string{"imap", "floor", "plain", "handshake"}
)

// TestGatewayProcess makes each of BenchmarkGatewayProcess's exchanges once, with every
// gateway it measures, so that a gateway that stops relaying them (the floor's included)
// fails `go test` rather than only the benchmark.
func TestGatewayProcess(t *testing.T) {
	backend := startScriptedBackend(t)
	for _, mode := range processFetchModes {
		t.Run("fetch/"+mode, func(t *testing.T) {
			gw := startGatewayProcess(t, mode, backend)
			gw.g.deadline = 10 * time.Second
			c := gw.connect(t, mode)
			defer c.c.Close()
			for _, size := range []int{1, 1 << 20} {
				c.cmd(t, "FETCH "+strconv.Itoa(size))
			}
			if gw.cpu(t) <= 0 {
				t.Error("the gateway reported no CPU time")
			}
		})
	}
	for _, mode := range processLoginModes {
		t.Run("login/"+mode, func(t *testing.T) {
			gw := startGatewayProcess(t, mode, backend)
			gw.g.deadline = 10 * time.Second
			for range 2 {
				gw.session(t, mode)
			}
		})
	}
}

var childProfile = flag.String("childprofile", "", "BenchmarkGatewayProcess writes the gateway process's CPU profile to `prefix`-<benchmark>.pprof")

// startGatewayProcess starts TestGatewayProcessChild as mode in front of backend.
func startGatewayProcess(b testing.TB, mode, backend string) *gatewayProcess {
	var args []string
	if *childProfile != "" {
		args = append(args, "-test.cpuprofile", *childProfile+"-"+strings.ReplaceAll(b.Name(), "/", "_")+".pprof")
	}
	return &gatewayProcess{startChild(b, "TestGatewayProcessChild", []string{"SASLGATE_BENCH_CHILD=" + mode, "SASLGATE_BENCH_BACKEND=" + backend}, args...)}
}

// gatewayProcess is BenchmarkGatewayProcess's child gateway.
type gatewayProcess struct{ *childGateway }

// cpu asks the gateway process for its CPU time so far.
func (p *gatewayProcess) cpu(b testing.TB) time.Duration {
	ns, err := strconv.ParseInt(p.ask(b, "cpu"), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// connect opens a client connection to a gateway in mode: through AUTHENTICATE where the
// gateway logs in (imap, floor, plain), after the greeting (handshake), after the TLS
// handshake alone (the relay modes, which send no greeting).
func (p *gatewayProcess) connect(b testing.TB, mode string) *benchClient {
	if mode == "imap" || mode == "floor" {
		return p.g.login(b)
	}
	raw := p.g.dial(b)
	c := &benchClient{c: raw}
	if mode != "plain" {
		tc := tls.Client(raw, p.g.clientTLS)
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		c.c = tc
	}
	c.br = bufio.NewReader(c.c)
	if mode == "plain" || mode == "handshake" {
		if _, err := c.br.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
	}
	if mode == "plain" {
		c.cmd(b, "AUTHENTICATE OAUTHBEARER "+benchIR)
	}
	return c
}

// session is one login row's session: connect, log in, LOGOUT, close; in mode "handshake"
// connect and close.
func (p *gatewayProcess) session(tb testing.TB, mode string) {
	c := p.connect(tb, mode)
	if mode != "handshake" {
		c.cmd(tb, "LOGOUT")
	}
	c.c.Close()
}

// TestGatewayProcessChild is BenchmarkGatewayProcess's gateway; it does nothing unless
// started by it. It prints its address, then answers each "cpu" line on stdin with its
// CPU time in nanoseconds, and returns when stdin closes.
func TestGatewayProcessChild(t *testing.T) {
	mode := os.Getenv("SASLGATE_BENCH_CHILD")
	if mode == "" {
		t.Skip("started by BenchmarkGatewayProcess only")
	}
	backend := os.Getenv("SASLGATE_BENCH_BACKEND")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := certs.FromCertificate(cert).TLSConfig()
	switch mode {
	case "imap":
		srv := &imap.Server{
			Listener:  proxy.ListenerConfig{Name: "bench", Protocol: "imap", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
			TLSConfig: tlsConfig,
			Login:     &proxy.Login{Validator: acceptAll{}, Secrets: fixedSecret{}, Router: backends.Single("imap", backends.Config{Address: backend, TLS: "none"})},
			Dial: func(ctx context.Context, _ string, _ backends.Secret) (*backends.IMAPSession, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", backend)
				if err != nil {
					return nil, err
				}
				return &backends.IMAPSession{Conn: c, Reader: bufio.NewReader(c), Capabilities: []string{"IMAP4rev1", "IDLE"}}, nil
			},
		}
		go srv.Serve(ln)
		defer srv.Close()
	case "relay", "relay-coalesce":
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					if mode == "relay-coalesce" {
						c = relay.Coalesce(c)
					}
					tc := tls.Server(c, tlsConfig)
					if err := tc.Handshake(); err != nil {
						c.Close()
						return
					}
					bc, err := net.Dial("tcp", backend)
					if err != nil {
						c.Close()
						return
					}
					relay.Start(tc, bufio.NewReader(tc), bc, bufio.NewReader(bc), nil, func(int64, int64) {})
				}()
			}
		}()
	case "floor":
		go floor.Serve(ln, tlsConfig, dialBackend(backend))
	case "plain":
		go floor.Serve(ln, nil, dialBackend(backend))
	case "handshake":
		go serveHandshake(ln, tlsConfig)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	fmt.Println(ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		fmt.Println(ru.Utime.Nano() + ru.Stime.Nano())
	}
}
