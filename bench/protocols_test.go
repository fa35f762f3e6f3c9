package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/pop3"
	"github.com/saslgate/saslgate/proxy/sieve"
	"github.com/saslgate/saslgate/tls/certs"
)

// loginProtocol is one front end of BenchmarkGatewayLoginProtocol: start serves it on loopback
// in front of a scripted backend and returns a function that runs one whole client session.
type loginProtocol struct {
	name  string
	start func(tb testing.TB) (session func(tb testing.TB))
}

// loginProtocols are the front ends that relay a mail session after the login. Each session
// is the same work as GatewayLogin/stub: connect, full TLS 1.3 handshake, greeting,
// OAUTHBEARER with an initial response (accepted by acceptAll), the backend dial stubbed to
// a connection to the scripted backend, the splice, the protocol's logout relayed to the
// backend and its answer, close.
var loginProtocols = []loginProtocol{
	{"imap", func(tb testing.TB) func(testing.TB) {
		g := newGateway(tb, nil)
		return func(tb testing.TB) {
			c := g.login(tb)
			c.cmd(tb, "LOGOUT")
			c.c.Close()
		}
	}},
	{"pop3", startPOP3},
	{"sieve", startSieve},
}

// BenchmarkGatewayLoginProtocol: the stub login through the real proxy/imap, proxy/pop3 and
// proxy/sieve servers in one run, so the front ends compare with each other (imap is
// GatewayLogin/stub again). POP3 is AUTH OAUTHBEARER <ir> (RFC 5034) and QUIT; ManageSieve
// reads the capability greeting, sends AUTHENTICATE "OAUTHBEARER" "<ir>" (RFC 5804 §2.1)
// and LOGOUT. Every row reports cpu-ms/login (the whole process) and logins/s.
func BenchmarkGatewayLoginProtocol(b *testing.B) {
	for _, p := range loginProtocols {
		b.Run(p.name, func(b *testing.B) {
			session := p.start(b)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				session(b)
			}
			cpu.reportPerOp(b, "cpu-ms/login")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

// TestGatewayLoginProtocol runs each protocol's session a few times, so a change of a
// front end's replies fails `go test` rather than only the benchmark.
func TestGatewayLoginProtocol(t *testing.T) {
	for _, p := range loginProtocols {
		t.Run(p.name, func(t *testing.T) {
			session := p.start(t)
			for range 3 {
				session(t)
			}
		})
	}
}

// benchIR is the OAUTHBEARER initial response of every login (RFC 7628 §3.1).
var benchIR = base64.StdEncoding.EncodeToString([]byte("n,a=" + benchUser + ",\x01auth=Bearer opaque-bench-token\x01\x01"))

func startPOP3(tb testing.TB) func(testing.TB) {
	backend := scriptedLines(tb, "", func(line string) (string, bool) {
		if strings.EqualFold(strings.TrimSpace(line), "QUIT") {
			return "+OK bye", true
		}
		return "+OK", false
	})
	ln, cert := frontendListener(tb)
	srv := &pop3.Server{
		Listener:  proxy.ListenerConfig{Name: "bench", Protocol: "pop3", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
		TLSConfig: certs.FromCertificate(cert).TLSConfig(),
		Login:     stubLogin("pop3", backend),
		Dial: func(ctx context.Context, _ string, _ backends.Secret) (*backends.POP3Session, error) {
			c, err := stubDial(ctx, backend)
			if err != nil {
				return nil, err
			}
			return &backends.POP3Session{Conn: c, Reader: bufio.NewReader(c)}, nil
		},
	}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	return func(tb testing.TB) {
		c := dialLines(tb, addr)
		defer c.c.Close()
		c.until(tb, "+OK", "-ERR")
		c.send(tb, "AUTH OAUTHBEARER "+benchIR)
		c.until(tb, "+OK", "-ERR")
		c.send(tb, "QUIT")
		c.until(tb, "+OK", "-ERR")
	}
}

// sieveGreeting is what the scripted ManageSieve backend announces to the server's capability
// probe (RFC 5804 §1.7), as Dovecot Pigeonhole does, shortened.
const sieveGreeting = `"IMPLEMENTATION" "bench"` + "\r\n" + `"SIEVE" "fileinto reject envelope"` + "\r\n" +
	`"SASL" "PLAIN"` + "\r\n" + `"VERSION" "1.0"` + "\r\n" + `OK "ready"`

func startSieve(tb testing.TB) func(testing.TB) {
	answer := func(line string) (string, bool) {
		if strings.EqualFold(strings.TrimSpace(line), "LOGOUT") {
			return `OK "Logout completed."`, true
		}
		return `OK`, false
	}
	// Serve probes the route's member for its capabilities; the logins' stub dial goes to a
	// backend that, like the IMAP and POP3 ones, sends no greeting.
	probe := scriptedLines(tb, sieveGreeting, answer)
	backend := scriptedLines(tb, "", answer)
	ln, cert := frontendListener(tb)
	srv := &sieve.Server{
		Listener:  proxy.ListenerConfig{Name: "bench", Protocol: "sieve", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
		TLSConfig: certs.FromCertificate(cert).TLSConfig(),
		Login:     stubLogin("sieve", probe),
		Dial: func(ctx context.Context, _ string, _ backends.Secret) (*backends.SieveSession, error) {
			c, err := stubDial(ctx, backend)
			if err != nil {
				return nil, err
			}
			return &backends.SieveSession{Conn: c, Reader: bufio.NewReader(c)}, nil
		},
	}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	return func(tb testing.TB) {
		c := dialLines(tb, addr)
		defer c.c.Close()
		c.until(tb, "OK", "NO", "BYE") // the capabilities, then OK
		c.send(tb, `AUTHENTICATE "OAUTHBEARER" "`+benchIR+`"`)
		c.until(tb, "OK", "NO", "BYE")
		c.send(tb, "LOGOUT")
		c.until(tb, "OK", "NO", "BYE")
	}
}

func frontendListener(tb testing.TB) (net.Listener, tls.Certificate) {
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln, cert
}

// stubLogin accepts every token and routes every login to addr.
func stubLogin(protocol, addr string) *proxy.Login {
	return &proxy.Login{Validator: acceptAll{}, Secrets: fixedSecret{},
		Router: backends.Single(protocol, backends.Config{Address: addr, TLS: "none"})}
}

func stubDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// scriptedLines serves a line protocol on loopback: greeting (if any) on connect, then answer's
// reply to each line, closing after a reply with end set. It returns the address.
func scriptedLines(tb testing.TB, greeting string, answer func(line string) (reply string, end bool)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if greeting != "" {
					if _, err := io.WriteString(c, greeting+"\r\n"); err != nil {
						return
					}
				}
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					reply, end := answer(line)
					if _, err := io.WriteString(c, reply+"\r\n"); err != nil || end {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// lineClient is the client side of a POP3 or ManageSieve session over implicit TLS.
type lineClient struct {
	c  *tls.Conn
	br *bufio.Reader
}

func dialLines(tb testing.TB, addr string) *lineClient {
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}})
	return &lineClient{c: c, br: bufio.NewReader(c)}
}

func (c *lineClient) send(tb testing.TB, line string) {
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		tb.Fatal(err)
	}
}

// until reads lines up to one that starts with ok, failing on one that starts with any of
// fail; other lines (capabilities) are skipped.
func (c *lineClient) until(tb testing.TB, ok string, fail ...string) {
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			tb.Fatal(err)
		}
		if strings.HasPrefix(line, ok) {
			return
		}
		for _, f := range fail {
			if strings.HasPrefix(line, f) {
				tb.Fatalf("reply %q", strings.TrimSpace(line))
			}
		}
	}
}
