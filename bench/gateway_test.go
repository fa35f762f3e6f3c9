package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/tls/certs"
)

// The real proxy/imap.Server in front of a scripted backend, for before/after
// measurements of changes to the gateway itself:
//
//	go test ./bench -run '^$' -bench Gateway -benchmem -cpuprofile cpu.out
//
// Client and backend share the process, so profiles show their work too;
// imapbench (make bench) measures the real binary in its own process.

const benchUser = "bench@example.com"

type acceptAll struct{}

func (acceptAll) Validate(context.Context, introspect.Request) (introspect.Identity, error) {
	return introspect.Identity{User: benchUser, Issuer: "bench"}, nil
}

type fixedSecret struct{}

func (fixedSecret) Secret(context.Context, string) (backends.Secret, error) {
	return "secret", nil
}

type gateway struct {
	addr      string
	clientTLS *tls.Config
	token     string
	// pipelineID sends "p ID NIL" and the AUTHENTICATE in one write, as a client that
	// pipelines its pre-login commands does.
	pipelineID bool
	// resume: every login must resume a TLS session (clientTLS has a ClientSessionCache).
	resume bool
	// deadline, if set, bounds each connection's whole life: a test fails on a gateway
	// that stops answering instead of hanging.
	deadline time.Duration
}

// dial connects to the gateway, within g.deadline if set.
func (g *gateway) dial(tb testing.TB) net.Conn {
	raw, err := net.Dial("tcp", g.addr)
	if err != nil {
		tb.Fatal(err)
	}
	if g.deadline > 0 {
		raw.SetDeadline(time.Now().Add(g.deadline))
	}
	return raw
}

// newGateway serves imap.Server on loopback; validator nil means acceptAll.
func newGateway(tb testing.TB, validator proxy.Validator) *gateway {
	return newRoutedGateway(tb, validator, nil)
}

// newRoutedGateway is newGateway with the logins routed by router (nil: the one scripted
// backend); every route's member is dialled as the scripted backend, so the figures differ by
// the routing alone.
// opts adjust the Login before it serves (BenchmarkGatewayLoginShared's store).
func newRoutedGateway(tb testing.TB, validator proxy.Validator, router *backends.Router, opts ...func(*proxy.Login)) *gateway {
	backend := startScriptedBackend(tb)

	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if validator == nil {
		validator = acceptAll{}
	}
	if router == nil {
		router = backends.Single("imap", backends.Config{Address: backend, TLS: "none"})
	}
	login := &proxy.Login{Validator: validator, Secrets: fixedSecret{}, Router: router}
	for _, o := range opts {
		o(login)
	}
	srv := &imap.Server{
		Listener:  proxy.ListenerConfig{Name: "bench", Protocol: "imap", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
		TLSConfig: certs.FromCertificate(cert).TLSConfig(),
		Login:     login,
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
	tb.Cleanup(func() { srv.Close() })
	return &gateway{
		addr:      ln.Addr().String(),
		clientTLS: &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}},
		token:     "opaque-bench-token",
	}
}

// startScriptedBackend serves serveScriptedBackend on loopback until tb ends and returns
// its address.
func startScriptedBackend(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go serveScriptedBackend(ln)
	return ln.Addr().String()
}

// serveScriptedBackend answers what the benchmarks send after login:
// FETCH <n> (n bytes as one literal), NOOP, LOGOUT.
func serveScriptedBackend(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br, bw := bufio.NewReader(c), bufio.NewWriter(c)
			var body []byte
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				f := strings.Fields(line)
				if len(f) < 2 {
					return
				}
				tag := f[0]
				switch strings.ToUpper(f[1]) {
				case "FETCH":
					n, _ := strconv.Atoi(f[2])
					if len(body) < n {
						body = make([]byte, n)
					}
					fmt.Fprintf(bw, "* 1 FETCH (BODY[] {%d}\r\n", n)
					bw.Write(body[:n])
					fmt.Fprintf(bw, ")\r\n%s OK FETCH completed\r\n", tag)
				case "LOGOUT":
					fmt.Fprintf(bw, "* BYE\r\n%s OK LOGOUT completed\r\n", tag)
					bw.Flush()
					return
				default:
					fmt.Fprintf(bw, "%s OK %s completed\r\n", tag, f[1])
				}
				if bw.Flush() != nil {
					return
				}
			}
		}()
	}
}

type benchClient struct {
	c  net.Conn // a *tls.Conn but in BenchmarkGatewayProcess's plain rows
	br *bufio.Reader
}

func (g *gateway) login(tb testing.TB) *benchClient {
	c := &benchClient{c: tls.Client(g.dial(tb), g.clientTLS)}
	c.br = bufio.NewReader(c.c)
	if _, err := c.br.ReadString('\n'); err != nil {
		tb.Fatal(err)
	}
	if g.resume && !c.c.(*tls.Conn).ConnectionState().DidResume {
		tb.Fatal("TLS session not resumed")
	}
	ir := base64.StdEncoding.EncodeToString([]byte("n,a=" + benchUser + ",\x01auth=Bearer " + g.token + "\x01\x01"))
	if g.pipelineID {
		c.cmd(tb, "AUTHENTICATE OAUTHBEARER "+ir, "p ID NIL\r\n")
	} else {
		c.cmd(tb, "AUTHENTICATE OAUTHBEARER "+ir)
	}
	return c
}

// cmd sends a command, after the lines in before in the same write, and reads to its tagged
// OK, skipping literals and the other tags' completions.
func (c *benchClient) cmd(tb testing.TB, command string, before ...string) {
	if _, err := io.WriteString(c.c, strings.Join(before, "")+"t "+command+"\r\n"); err != nil {
		tb.Fatal(err)
	}
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			tb.Fatal(err)
		}
		if i := strings.LastIndexByte(string(line), '{'); i >= 0 && strings.HasSuffix(string(line), "}\r\n") {
			n, _ := strconv.Atoi(string(line[i+1 : len(line)-3]))
			if _, err := c.br.Discard(n); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		if strings.HasPrefix(string(line), "t ") {
			if !strings.HasPrefix(string(line), "t OK") {
				tb.Fatalf("%s: %s", command, line)
			}
			return
		}
	}
}

func BenchmarkGatewayFetch(b *testing.B) {
	g := newGateway(b, nil)
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			c := g.login(b)
			defer c.c.Close()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				c.cmd(b, "FETCH "+strconv.Itoa(size))
			}
			cpu.reportPerGB(b, size)
		})
	}
}

func BenchmarkGatewayNOOP(b *testing.B) {
	g := newGateway(b, nil)
	c := g.login(b)
	defer c.c.Close()
	b.ReportAllocs()
	for b.Loop() {
		c.cmd(b, "NOOP")
	}
}

// BenchmarkGatewayLogin: connect, full TLS 1.3 handshake, AUTHENTICATE
// OAUTHBEARER, backend dial, splice, LOGOUT, close. "stub" accepts any token;
// "pipelined" is stub with ID NIL and the AUTHENTICATE sent in one write; "resumed" is
// stub resuming a TLS 1.3 session (tickets) on every login, failing if one does not;
// "jwt" validates a JWT against a JWKS (introspect.Validator), signed RS256 (RSA-2048) or
// ES256 (P-256), with the result cache on or off: cache=false verifies the signature on every
// login, as a fresh token's first login does.
func BenchmarkGatewayLogin(b *testing.B) {
	b.Run("stub", func(b *testing.B) { benchLogin(b, newGateway(b, nil)) })
	b.Run("pipelined", func(b *testing.B) {
		g := newGateway(b, nil)
		g.pipelineID = true
		benchLogin(b, g)
	})
	b.Run("resumed", func(b *testing.B) {
		g := newGateway(b, nil)
		g.clientTLS.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		c := g.login(b) // the first login is a full handshake; it brings the ticket
		c.cmd(b, "LOGOUT")
		c.c.Close()
		g.resume = true
		benchLogin(b, g)
	})
	for _, alg := range []string{"RS256", "ES256"} {
		for _, cached := range []bool{true, false} {
			b.Run(fmt.Sprintf("jwt/alg=%s/cache=%t", alg, cached), func(b *testing.B) {
				v, token := jwtValidator(b, alg, cached)
				g := newGateway(b, v)
				g.token = token
				benchLogin(b, g)
			})
		}
	}
}

// BenchmarkGatewayLoginRouted: the stub login of BenchmarkGatewayLogin, sequential and with
// 64 concurrent clients, routed three ways in one run: the single backend, rendezvous hashing
// over a pool of two members, and an auth_http responder whose answer is cached. Every client
// logs in as the same user, so the http rows also count the responder's requests per run
// (http-lookups/op × N): one per cache TTL, however many clients wait for it.
func BenchmarkGatewayLoginRouted(b *testing.B) {
	pool := func(sources ...backends.Source) *backends.Router {
		ps, err := backends.NewPools([]backends.PoolConfig{{Name: "shard", Protocol: "imap", Config: backends.Config{TLS: "none"},
			Members: []backends.MemberConfig{{Address: "10.0.0.1:143"}, {Address: "10.0.0.2:143"}}, HealthCheck: backends.HealthConfig{Disabled: true}}},
			map[string]string{"imap": "shard"})
		if err != nil {
			b.Fatal(err)
		}
		return backends.NewRouter(ps, sources, backends.RoutesConfig{}, nil)
	}
	var lookups atomic.Int64
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		lookups.Add(1)
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", "10.0.0.2")
		w.Header().Set("Auth-Port", "143")
	}))
	b.Cleanup(responder.Close)
	for _, conc := range []int{1, 64} {
		for _, rc := range []struct {
			name   string
			router func() *backends.Router
		}{
			{"single", func() *backends.Router { return nil }},
			{"hash2", func() *backends.Router { return pool() }},
			{"http-cached", func() *backends.Router {
				src, err := backends.NewHTTPSource(backends.HTTPConfig{URL: responder.URL})
				if err != nil {
					b.Fatal(err)
				}
				return pool(src)
			}},
		} {
			b.Run(fmt.Sprintf("%s/clients=%d", rc.name, conc), func(b *testing.B) {
				g := newRoutedGateway(b, nil, rc.router())
				lookups.Store(0)
				if conc == 1 {
					benchLogin(b, g)
				} else {
					b.SetParallelism((conc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
					b.ReportAllocs()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							c := g.login(b)
							c.cmd(b, "LOGOUT")
							c.c.Close()
						}
					})
				}
				if rc.name == "http-cached" {
					b.ReportMetric(float64(lookups.Load())/float64(b.N), "http-lookups/op")
				}
			})
		}
	}
}

func benchLogin(b *testing.B, g *gateway) {
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		c := g.login(b)
		c.cmd(b, "LOGOUT")
		c.c.Close()
	}
	cpu.reportPerOp(b, "cpu-ms/login")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
}

// BenchmarkBackendDialIMAP: backends.DialIMAP against a scripted backend that offers
// CAPABILITY in its greeting, SASL-IR, ID and AUTH=PLAIN (as Dovecot does): dial, greeting,
// login, close; with forward_client_address the client's address goes first in an ID.
func BenchmarkBackendDialIMAP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go serveScriptedLogin(ln)
	client := backends.Client{Addr: netip.MustParseAddrPort("192.0.2.1:50000"), Local: netip.MustParseAddrPort("192.0.2.2:993")}
	for _, forward := range []bool{false, true} {
		b.Run(fmt.Sprintf("forward=%t", forward), func(b *testing.B) {
			cfg := backends.Config{Address: ln.Addr().String(), TLS: "none", ForwardClientAddress: forward}
			b.ReportAllocs()
			for b.Loop() {
				s, err := backends.DialIMAP(context.Background(), cfg, benchUser, "secret", client)
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

// serveScriptedLogin answers a backend login as Dovecot does: the greeting with its
// capabilities, ID, AUTHENTICATE PLAIN with an initial response; it writes when it has
// answered every command the client has sent.
func serveScriptedLogin(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br, bw := bufio.NewReader(c), bufio.NewWriter(c)
			bw.WriteString("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] ready\r\n")
			for {
				if br.Buffered() == 0 && bw.Flush() != nil {
					return
				}
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				f := strings.Fields(line)
				if len(f) < 2 {
					return
				}
				switch strings.ToUpper(f[1]) {
				case "ID":
					fmt.Fprintf(bw, "* ID (\"name\" \"bench\")\r\n%s OK ID completed\r\n", f[0])
				case "AUTHENTICATE":
					fmt.Fprintf(bw, "%s OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE SORT MOVE] Logged in\r\n", f[0])
				default:
					fmt.Fprintf(bw, "%s BAD unexpected\r\n", f[0])
				}
			}
		}()
	}
}

// jwtValidator returns a Validator of the tokens of a demo issuer signing with alg, and one
// such token.
func jwtValidator(tb testing.TB, alg string, cached bool) (*introspect.Validator, string) {
	hs := httptest.NewUnstartedServer(nil)
	iss, err := demoissuer.New("http://"+hs.Listener.Addr().String(), nil, demoissuer.WithAlgorithm(alg))
	if err != nil {
		tb.Fatal(err)
	}
	hs.Config.Handler = iss.Handler()
	hs.Start()
	tb.Cleanup(hs.Close)
	cfg := introspect.Config{
		Issuers: []introspect.IssuerConfig{{Issuer: iss.URL(), Mode: "jwt", Audience: []string{demoissuer.DefaultAudience}, UsernameClaim: "email"}},
		Cache:   introspect.CacheConfig{Disabled: !cached},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := introspect.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	token, err := iss.Mint(demoissuer.Claims{Subject: "bench", Email: benchUser})
	if err != nil {
		tb.Fatal(err)
	}
	return v, token
}
