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
//   - relay-coalesce: relay over relay.Coalesce, as a front end wraps its client socket.
//
// CPU time is what other processes on the machine disturb least; it still includes the
// Go runtime's own (GC, the scheduler's spinning).
func BenchmarkGatewayProcess(b *testing.B) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bln.Close() })
	go serveScriptedBackend(bln)
	const size = 1 << 20
	for _, mode := range []string{"imap", "relay", "relay-coalesce"} {
		b.Run("fetch/"+mode, func(b *testing.B) {
			gw := startGatewayProcess(b, mode, bln.Addr().String())
			c := gw.connect(b, strings.HasPrefix(mode, "imap"))
			defer c.c.Close()
			b.SetBytes(size)
			cpu := gw.cpu(b)
			for b.Loop() {
				c.cmd(b, "FETCH "+strconv.Itoa(size))
			}
			b.ReportMetric((gw.cpu(b)-cpu).Seconds()/(float64(b.N)*size/1e9), "proxy-cpu-s/GB")
		})
	}
	b.Run("login/imap", func(b *testing.B) {
		gw := startGatewayProcess(b, "imap", bln.Addr().String())
		cpu := gw.cpu(b)
		for b.Loop() {
			c := gw.connect(b, true)
			c.cmd(b, "LOGOUT")
			c.c.Close()
		}
		b.ReportMetric(float64((gw.cpu(b)-cpu).Microseconds())/1e3/float64(b.N), "proxy-cpu-ms/login")
	})
}

var childProfile = flag.String("childprofile", "", "BenchmarkGatewayProcess writes the gateway process's CPU profile to `prefix`-<benchmark>.pprof")

// startGatewayProcess starts TestGatewayProcessChild as mode in front of backend.
func startGatewayProcess(b *testing.B, mode, backend string) *gatewayProcess {
	var args []string
	if *childProfile != "" {
		args = append(args, "-test.cpuprofile", *childProfile+"-"+strings.ReplaceAll(b.Name(), "/", "_")+".pprof")
	}
	return &gatewayProcess{startChild(b, "TestGatewayProcessChild", []string{"SASLGATE_BENCH_CHILD=" + mode, "SASLGATE_BENCH_BACKEND=" + backend}, args...)}
}

// gatewayProcess is BenchmarkGatewayProcess's child gateway.
type gatewayProcess struct{ *childGateway }

// cpu asks the gateway process for its CPU time so far.
func (p *gatewayProcess) cpu(b *testing.B) time.Duration {
	ns, err := strconv.ParseInt(p.ask(b, "cpu"), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// connect opens a client connection; login: through AUTHENTICATE (imap), else after the
// TLS handshake alone (the relay modes, which send no greeting).
func (p *gatewayProcess) connect(b *testing.B, login bool) *benchClient {
	if login {
		return p.g.login(b)
	}
	raw, err := net.Dial("tcp", p.g.addr)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchClient{c: tls.Client(raw, p.g.clientTLS)}
	if err := c.c.Handshake(); err != nil {
		b.Fatal(err)
	}
	c.br = bufio.NewReader(c.c)
	return c
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
