package bench

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/tls/certs"
)

// BenchmarkGatewayIdle reports what an idle logged-in IMAP session costs the gateway,
// measured in a process of its own (this test binary, started again as
// TestGatewayIdleChild): the real proxy/imap.Server with a text logger at level info, as
// `saslgate serve` runs by default, and the stub backend dial of BenchmarkGatewayLogin. The
// client and the backend stay in this process. Each of -idlesessions sessions logs in
// (full TLS 1.3 handshake, AUTHENTICATE OAUTHBEARER), SELECTs INBOX and enters IDLE; once
// every direction has parked, the gateway reports, per session,
//
//   - heapB/session: live heap after two GCs (runtime.MemStats.HeapAlloc);
//   - inuseB/session: heap spans in use (HeapInuse);
//   - stackB/session, goroutines/session;
//   - rssKiB/session: VmRSS, before any forced GC, after -idlesettle.
//
// Its figures are the gateway's alone, unlike BenchmarkSpliceIdle's. -idlegogc sets the
// gateway's GOGC (the test process keeps its own); -gatewayidleheap writes the gateway's heap
// profile, sampled at every allocation, with the sessions open:
//
//	go test ./bench -run '^$' -bench GatewayIdle -benchtime 1x -gatewayidleheap /tmp/idle
//	go tool pprof -sample_index=inuse_space -top /tmp/idle-gateway.pprof
func BenchmarkGatewayIdle(b *testing.B) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bln.Close() })
	go serveIdleBackend(bln)
	for range b.N {
		gw := startIdleChild(b, bln.Addr().String())
		// Warm up what every session shares (the poller, pools, the listener's maps).
		for range 20 {
			c := gw.g.login(b)
			c.cmd(b, "LOGOUT")
			c.c.Close()
		}
		time.Sleep(100 * time.Millisecond)
		m0 := idleMemOf(b, gw)
		sessions := make([]*benchClient, *idleSessions)
		for i := range sessions {
			c := gw.g.login(b)
			c.cmd(b, "SELECT INBOX")
			c.idle(b)
			sessions[i] = c
		}
		// Every direction parks parkAfter (5 s) after its last data; the poller is the
		// one goroutine the sessions share.
		deadline := time.Now().Add(30 * time.Second)
		for idleMemOf(b, gw).goroutines > m0.goroutines+1 {
			if time.Now().After(deadline) {
				b.Fatal("waited 30s for the sessions to park")
			}
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(*idleSettle)
		m1 := idleMemOf(b, gw)
		n := float64(len(sessions))
		b.ReportMetric(float64(m1.heapAlloc-m0.heapAlloc)/n, "heapB/session")
		b.ReportMetric(float64(m1.heapInuse-m0.heapInuse)/n, "inuseB/session")
		b.ReportMetric(float64(m1.stack-m0.stack)/n, "stackB/session")
		b.ReportMetric(float64(m1.goroutines-m0.goroutines)/n, "goroutines/session")
		b.ReportMetric(float64(m1.rss-m0.rss)/1024/n, "rssKiB/session")
		if *idleHeapOut != "" {
			gw.ask(b, "heap "+*idleHeapOut+"-gateway.pprof")
		}
		for _, c := range sessions {
			c.c.Close()
		}
	}
}

var (
	idleSessions = flag.Int("idlesessions", 2000, "BenchmarkGatewayIdle's idle sessions")
	idleSettle   = flag.Duration("idlesettle", 5*time.Second, "how long BenchmarkGatewayIdle waits after the sessions parked before it reads the gateway's RSS")
	idleGOGC     = flag.String("idlegogc", "", "BenchmarkGatewayIdle's gateway process's GOGC (empty: this process's environment)")
	idleHeapOut  = flag.String("gatewayidleheap", "", "BenchmarkGatewayIdle writes the gateway's heap profile to `prefix`-gateway.pprof with the sessions open")
)

// idle sends IDLE and reads the backend's continuation (RFC 2177).
func (c *benchClient) idle(tb testing.TB) {
	if _, err := io.WriteString(c.c, "i IDLE\r\n"); err != nil {
		tb.Fatal(err)
	}
	line, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+ ") {
		tb.Fatalf("IDLE: %q, %v", line, err)
	}
}

// serveIdleBackend answers SELECT, IDLE (a continuation, then the tagged OK after DONE) and
// LOGOUT as a mail server would, tersely.
func serveIdleBackend(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				f := strings.Fields(line)
				if len(f) < 2 {
					return
				}
				var reply string
				switch strings.ToUpper(f[1]) {
				case "SELECT":
					reply = "* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n" + f[0] + " OK [READ-WRITE] SELECT completed\r\n"
				case "IDLE":
					if _, err := io.WriteString(c, "+ idling\r\n"); err != nil {
						return
					}
					if _, err := br.ReadString('\n'); err != nil { // DONE
						return
					}
					reply = f[0] + " OK IDLE terminated\r\n"
				case "LOGOUT":
					io.WriteString(c, "* BYE\r\n"+f[0]+" OK LOGOUT completed\r\n")
					return
				default:
					reply = f[0] + " OK " + f[1] + " completed\r\n"
				}
				if _, err := io.WriteString(c, reply); err != nil {
					return
				}
			}
		}()
	}
}

type idleMem struct {
	rss, heapAlloc, heapInuse, stack uint64
	goroutines                       int
}

// startIdleChild starts TestGatewayIdleChild in front of backend.
func startIdleChild(b *testing.B, backend string) *childGateway {
	env := []string{"SASLGATE_BENCH_IDLE_BACKEND=" + backend}
	if *idleGOGC != "" {
		env = append(env, "GOGC="+*idleGOGC)
	}
	var args []string
	if *idleHeapOut != "" {
		args = append(args, "-test.memprofilerate", "1")
	}
	return startChild(b, "TestGatewayIdleChild", env, args...)
}

// idleMemOf asks the idle gateway p for its memory figures.
func idleMemOf(b *testing.B, p *childGateway) idleMem {
	var m idleMem
	if _, err := fmt.Sscan(p.ask(b, "mem"), &m.rss, &m.heapAlloc, &m.heapInuse, &m.stack, &m.goroutines); err != nil {
		b.Fatal(err)
	}
	return m
}

// TestGatewayIdleChild is BenchmarkGatewayIdle's gateway; it does nothing unless started by
// it. It prints its address, then answers each line on stdin: "mem" with its VmRSS (read
// first), and after two GCs its HeapAlloc, HeapInuse, StackInuse and goroutines; "heap
// PATH" by writing its heap profile to PATH. It returns when stdin closes.
func TestGatewayIdleChild(t *testing.T) {
	backend := os.Getenv("SASLGATE_BENCH_IDLE_BACKEND")
	if backend == "" {
		t.Skip("started by BenchmarkGatewayIdle only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := &imap.Server{
		Listener:  proxy.ListenerConfig{Name: "bench", Protocol: "imap", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
		TLSConfig: certs.FromCertificate(cert).TLSConfig(),
		Login:     &proxy.Login{Validator: acceptAll{}, Secrets: fixedSecret{}, Router: backends.Single("imap", backends.Config{Address: backend, TLS: "none"})},
		Dial: func(ctx context.Context, _ string, _ backends.Secret) (*backends.IMAPSession, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", backend)
			if err != nil {
				return nil, err
			}
			return &backends.IMAPSession{Conn: c, Reader: bufio.NewReader(c), Capabilities: []string{"IMAP4rev1", "IDLE"}}, nil
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Limits: proxy.Limits{MaxConnections: 1 << 20, MaxConnectionsPerIP: 1 << 20},
	}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Println(ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		req := sc.Text()
		switch {
		case req == "mem":
			rss := vmRSS(t)
			runtime.GC()
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Println(rss, m.HeapAlloc, m.HeapInuse, m.StackInuse, runtime.NumGoroutine())
		case strings.HasPrefix(req, "heap "):
			f, err := os.Create(strings.TrimPrefix(req, "heap "))
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
			fmt.Println("ok")
		default:
			t.Fatalf("unknown request %q", req)
		}
	}
}

// vmRSS is this process's resident set in bytes, from /proc/self/status.
func vmRSS(tb testing.TB) uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(string(rest)), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
