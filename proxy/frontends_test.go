package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/proxy/pop3"
	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/proxy/sieve"
	"github.com/saslgate/saslgate/proxy/smtp"
	"github.com/saslgate/saslgate/tls/certs"
)

// The login pipeline's outcomes, as each front end answers them: DESIGN.md's error table,
// tested once over the protocols. Each case sends one XOAUTH2 initial response, answers an
// error challenge if one comes, and checks the final reply.
func TestFrontEndsAnswerEachOutcome(t *testing.T) {
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)

	// The token names what the pipeline is to come to.
	validator := validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
		switch r.Token {
		case "idp-down":
			return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrTemporary}
		case "no-scope":
			return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInsufficientScope, Scope: r.Protocol}
		case "forged":
			return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInvalidToken}
		}
		return introspect.Identity{User: r.Token}, nil // the user is the token
	})
	dialErr := func(user string, _ backends.Secret) error {
		switch user {
		case "backend-down":
			return fmt.Errorf("dial: %w", backends.ErrUnavailable)
		case "backend-refuses":
			return fmt.Errorf("login: %w", backends.ErrRejected)
		}
		return errors.New("test: no backend for " + user)
	}
	secrets := secretsFunc(func(user string) (backends.Secret, error) {
		if user == "not-provisioned" {
			return "", backends.ErrUnknownUser
		}
		return "s3cret", nil
	})

	cases := []struct {
		name, user, token string
		delayed           bool
		want              map[string][]string // protocol → reply prefixes, in order; "" is EOF
	}{
		{"token refused", "forged", "forged", false, map[string][]string{
			"imap": {"+ ", "a NO [AUTHENTICATIONFAILED] "}, "smtp": {"334 ", "535 5.7.8 "},
			"pop3": {"+ ", "-ERR [AUTH] "}, "sieve": {`"`, `NO "Authentication failed."`}}},
		{"scope missing", "no-scope", "no-scope", false, map[string][]string{
			"imap": {"+ ", "a NO [AUTHENTICATIONFAILED] "}, "smtp": {"334 ", "535 5.7.8 "},
			"pop3": {"+ ", "-ERR [AUTH] "}, "sieve": {`"`, `NO "Authentication failed."`}}},
		{"authzid not the token's user", "mallory", "alice", false, map[string][]string{
			"imap": {"+ ", "a NO [AUTHENTICATIONFAILED] "}, "smtp": {"334 ", "535 5.7.8 "},
			"pop3": {"+ ", "-ERR [AUTH] "}, "sieve": {`"`, `NO "Authentication failed."`}}},
		{"malformed", "", "", false, map[string][]string{
			"imap": {"a BAD "}, "smtp": {"501 5.5.2 "},
			"pop3": {"-ERR Malformed XOAUTH2 message"}, "sieve": {`NO "Malformed XOAUTH2 message"`}}},
		{"IdP unavailable", "idp-down", "idp-down", false, map[string][]string{
			"imap": {"a NO [UNAVAILABLE] "}, "smtp": {"454 4.7.0 "},
			"pop3": {"-ERR [SYS/TEMP] "}, "sieve": {"NO (TRYLATER) "}}},
		{"backend unavailable", "backend-down", "backend-down", false, map[string][]string{
			"imap": {"a NO [UNAVAILABLE] "}, "smtp": {"454 4.7.0 "},
			"pop3": {"-ERR [SYS/TEMP] "}, "sieve": {"NO (TRYLATER) "}}},
		{"backend refuses the login", "backend-refuses", "backend-refuses", false, map[string][]string{
			"imap": {"a NO [UNAVAILABLE] "}, "smtp": {"454 4.7.0 "},
			"pop3": {"-ERR [SYS/TEMP] "}, "sieve": {"NO (TRYLATER) "}}},
		{"no secret for the user", "not-provisioned", "not-provisioned", false, map[string][]string{
			"imap": {"a NO [UNAVAILABLE] "}, "smtp": {"454 4.7.0 "},
			"pop3": {"-ERR [SYS/TEMP] "}, "sieve": {"NO (TRYLATER) "}}},
		// The delay is not sat out: the connection ends unanswered (SMTP's go-smtp answers
		// the failed AUTH before it closes).
		{"delay outlasts the pre-auth time", "alice", "alice", true, map[string][]string{
			"imap": {""}, "smtp": {"454 4.7.0 ", ""}, "pop3": {""}, "sieve": {""}}},
	}
	for _, fe := range frontEnds {
		t.Run(fe.protocol, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					login := &proxy.Login{Validator: validator, Secrets: secrets}
					if tc.delayed {
						login.Limiter = fixedLimiter(time.Hour)
					}
					addr := fe.start(t, proxy.ListenerConfig{Name: "tls", TLS: proxy.TLSImplicit}, backends.Config{}, login, cert, dialErr)
					nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
					if err != nil {
						t.Fatal(err)
					}
					defer nc.Close()
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					c := &lineConn{t: t, nc: nc, br: bufio.NewReader(nc)}
					ir := base64.StdEncoding.EncodeToString(sasl.EncodeXOAuth2(tc.user, tc.token))
					if tc.token == "" {
						ir = base64.StdEncoding.EncodeToString([]byte("no kvpairs at all"))
					}
					fe.auth(c, ir)
					wants, ok := tc.want[fe.protocol]
					if !ok {
						t.Fatalf("no expected replies for %s", fe.protocol)
					}
					for _, want := range wants {
						line := c.read()
						if want == "" {
							if line != "" {
								t.Fatalf("got %q, want the connection closed", line)
							}
							continue
						}
						if !strings.HasPrefix(line, want) {
							t.Fatalf("got %q, want %q", line, want)
						}
						if strings.HasPrefix(line, fe.challenge) {
							c.send(fe.answer) // the XOAUTH2 answer to the error challenge
						}
					}
				})
			}
		})
	}
}

// The pipeline asks the SecretSource for the user's secret only for the backend logins that
// send it (backends.Config.NeedsUserSecret); the master logins and xclient dial with none,
// login token with the client's token, and all of them run without any SecretSource at all.
func TestFrontEndsSecretOnlyWhenNeeded(t *testing.T) {
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	validator := validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
		return introspect.Identity{User: "alice"}, nil
	})
	want := map[string]string{"imap": "a NO [UNAVAILABLE] ", "smtp": "454 4.7.0 ", "pop3": "-ERR [SYS/TEMP] ", "sieve": "NO (TRYLATER) "}
	for _, fe := range frontEnds {
		logins := []string{backends.LoginPlain, backends.LoginLogin, backends.LoginMaster, backends.LoginMasterSeparator, backends.LoginToken}
		if fe.protocol == "smtp" {
			logins = append(logins, backends.LoginXClient)
		}
		for _, loginMode := range logins {
			backend := backends.Config{Login: loginMode}
			if loginMode == backends.LoginMaster || loginMode == backends.LoginMasterSeparator {
				backend.MasterUser, backend.MasterSecretFile = "admin", "/nonexistent/master.secret"
			}
			needs := backend.NeedsUserSecret()
			for _, withSource := range []bool{true, false} {
				if needs && !withSource {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/source=%v", fe.protocol, loginMode, withSource), func(t *testing.T) {
					var asked int
					var dialled []backends.Secret
					login := &proxy.Login{Validator: validator}
					if withSource {
						login.Secrets = secretsFunc(func(string) (backends.Secret, error) { asked++; return "s3cret", nil })
					}
					dial := func(_ string, secret backends.Secret) error {
						dialled = append(dialled, secret)
						return fmt.Errorf("dial: %w", backends.ErrUnavailable)
					}
					addr := fe.start(t, proxy.ListenerConfig{Name: "tls", TLS: proxy.TLSImplicit}, backend, login, cert, dial)
					nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
					if err != nil {
						t.Fatal(err)
					}
					defer nc.Close()
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					c := &lineConn{t: t, nc: nc, br: bufio.NewReader(nc)}
					fe.auth(c, base64.StdEncoding.EncodeToString(sasl.EncodeXOAuth2("alice", "token")))
					c.expect(want[fe.protocol])
					wantSecret, wantAsked := backends.Secret(""), 0
					if needs {
						wantSecret, wantAsked = "s3cret", 1
					}
					if backend.PassesToken() {
						wantSecret = "token" // the client's own, validated
					}
					if asked != wantAsked || len(dialled) != 1 || dialled[0].Reveal() != wantSecret.Reveal() {
						t.Errorf("SecretSource asked %d times, backend dialled with %d secrets (%q); want %d and one, %q",
							asked, len(dialled), revealAll(dialled), wantAsked, wantSecret.Reveal())
					}
				})
			}
		}
	}
}

func revealAll(s []backends.Secret) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.Reveal()
	}
	return out
}

// A client that stalls in the TLS handshake, the implicit one or the one after STARTTLS, is
// closed after the listener's handshake_timeout, not after the whole pre-authentication time.
func TestFrontEndsHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	login := &proxy.Login{Validator: validatorFunc(nil), Secrets: secretsFunc(nil)}
	noDial := func(string, backends.Secret) error { return errors.New("no backend") }
	for _, fe := range frontEnds {
		for _, mode := range []string{proxy.TLSImplicit, proxy.TLSStartTLS} {
			t.Run(fe.protocol+"/"+mode, func(t *testing.T) {
				l := proxy.ListenerConfig{Name: mode, TLS: mode, HandshakeTimeout: config.Duration(timeout)}
				addr := fe.start(t, l, backends.Config{}, login, cert, noDial)
				start := time.Now() // implicit TLS: the handshake begins at accept
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				c := &lineConn{t: t, nc: nc, br: bufio.NewReader(nc)}
				if mode == proxy.TLSStartTLS {
					start = time.Now() // before the server's handshake can begin
					fe.startTLS(c)
				}
				nc.Write([]byte{0x16, 0x03, 0x01}) // the start of a ClientHello record, and no more
				// go-smtp answers a failed STARTTLS handshake in plain text: 550, then 421 4.4.2
				// for the read that times out.
				for line := c.read(); line != ""; line = c.read() {
					if !strings.HasPrefix(line, "550 ") && !strings.HasPrefix(line, "421 ") {
						t.Fatalf("got %q, want the connection closed", line)
					}
				}
				// The pre-authentication time is 5 s (start): closing sooner is the handshake's.
				if d := time.Since(start); d < timeout || d > 4*time.Second {
					t.Errorf("closed %v after the stalled handshake began, want about %v", d, timeout)
				}
			})
		}
	}
}

// dialFunc stands for the backend login: what it returns is the login's error.
type dialFunc func(user string, secret backends.Secret) error

// frontEnds are the registered protocols' front ends, started on a loopback port with the
// backend configuration and a backend dialer that fails as dial says.
var frontEnds = []struct {
	protocol string
	start    func(t *testing.T, l proxy.ListenerConfig, backend backends.Config, login *proxy.Login, cert tls.Certificate, dial dialFunc) string
	auth     func(c *lineConn, ir string) // sends the AUTH command with ir
	startTLS func(c *lineConn)            // on a plaintext connection: greeting, STARTTLS, its OK
	// challenge starts a line holding a server challenge, answer is the client's empty
	// response to it (XOAUTH2's answer to the error challenge).
	challenge, answer string
}{
	{
		protocol: "imap",
		start: func(t *testing.T, l proxy.ListenerConfig, backend backends.Config, login *proxy.Login, cert tls.Certificate, dial dialFunc) string {
			ln := listen(t)
			l.Protocol = "imap"
			login.Router = routerFor(backend)
			srv := &imap.Server{
				Listener:  l,
				Config:    imap.Config{Backend: backend, PreauthTimeout: config.Duration(5 * time.Second)},
				TLSConfig: certs.FromCertificate(cert).TLSConfig(),
				Login:     login,
				Dial: func(_ context.Context, user string, secret backends.Secret) (*backends.IMAPSession, error) {
					return nil, dial(user, secret)
				},
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			return ln.Addr().String()
		},
		auth: func(c *lineConn, ir string) {
			c.expect("* OK ")
			c.send("a AUTHENTICATE XOAUTH2 " + ir)
		},
		startTLS: func(c *lineConn) {
			c.expect("* OK ")
			c.send("s STARTTLS")
			c.expect("s OK ")
		},
		challenge: "+ ",
	},
	{
		protocol: "smtp",
		start: func(t *testing.T, l proxy.ListenerConfig, backend backends.Config, login *proxy.Login, cert tls.Certificate, dial dialFunc) string {
			ln := listen(t)
			l.Protocol = "smtp"
			backend.Address = "127.0.0.1:1"
			login.Router = routerFor(backend)
			srv := &smtp.Server{
				Listener:  l,
				Config:    smtp.Config{Backend: backend, PreauthTimeout: config.Duration(5 * time.Second), Hostname: "mx.example"},
				TLSConfig: certs.FromCertificate(cert).TLSConfig(),
				Login:     login,
				Dial: func(_ context.Context, user string, secret backends.Secret) (*backends.SMTPSession, error) {
					return nil, dial(user, secret)
				},
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			return ln.Addr().String()
		},
		auth: func(c *lineConn, ir string) {
			c.expect("220 ")
			c.send("EHLO client.example")
			for !strings.HasPrefix(c.expect("250"), "250 ") {
			}
			c.send("AUTH XOAUTH2 " + ir)
		},
		startTLS: func(c *lineConn) {
			c.expect("220 ")
			c.send("EHLO client.example")
			for !strings.HasPrefix(c.expect("250"), "250 ") {
			}
			c.send("STARTTLS")
			c.expect("220 ")
		},
		challenge: "334 ",
	},
	{
		protocol: "pop3",
		start: func(t *testing.T, l proxy.ListenerConfig, backend backends.Config, login *proxy.Login, cert tls.Certificate, dial dialFunc) string {
			ln := listen(t)
			l.Protocol = "pop3"
			login.Router = routerFor(backend)
			srv := &pop3.Server{
				Listener:  l,
				Config:    pop3.Config{Backend: backend, PreauthTimeout: config.Duration(5 * time.Second)},
				TLSConfig: certs.FromCertificate(cert).TLSConfig(),
				Login:     login,
				Dial: func(_ context.Context, user string, secret backends.Secret) (*backends.POP3Session, error) {
					return nil, dial(user, secret)
				},
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			return ln.Addr().String()
		},
		auth: func(c *lineConn, ir string) {
			c.expect("+OK ")
			c.send("AUTH XOAUTH2 " + ir)
		},
		startTLS: func(c *lineConn) {
			c.expect("+OK ")
			c.send("STLS")
			c.expect("+OK ")
		},
		challenge: "+ ",
	},
	{
		protocol: "sieve",
		start: func(t *testing.T, l proxy.ListenerConfig, backend backends.Config, login *proxy.Login, cert tls.Certificate, dial dialFunc) string {
			ln := listen(t)
			l.Protocol = "sieve"
			// Serve probes the default pool's member for its capabilities before it accepts:
			// one that refuses at once.
			backend.Address = "127.0.0.1:1"
			login.Router = routerFor(backend)
			srv := &sieve.Server{
				Listener:  l,
				Config:    sieve.Config{Backend: backend, PreauthTimeout: config.Duration(5 * time.Second)},
				TLSConfig: certs.FromCertificate(cert).TLSConfig(),
				Login:     login,
				Dial: func(_ context.Context, user string, secret backends.Secret) (*backends.SieveSession, error) {
					return nil, dial(user, secret)
				},
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			return ln.Addr().String()
		},
		auth: func(c *lineConn, ir string) {
			for !strings.HasPrefix(c.expect(""), "OK ") { // the capabilities, then OK
			}
			c.send(`AUTHENTICATE "XOAUTH2" "` + ir + `"`)
		},
		startTLS: func(c *lineConn) {
			for !strings.HasPrefix(c.expect(""), "OK ") {
			}
			c.send("STARTTLS")
			c.expect("OK ")
		},
		challenge: `"`,
		answer:    `""`,
	},
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

type lineConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (c *lineConn) send(line string) {
	if _, err := io.WriteString(c.nc, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next line, or "" at the end of the connection.
func (c *lineConn) read() string {
	line, err := c.br.ReadString('\n')
	if err != nil && line == "" {
		return ""
	}
	return strings.TrimRight(line, "\r\n")
}

func (c *lineConn) expect(prefix string) string {
	c.t.Helper()
	line := c.read()
	if !strings.HasPrefix(line, prefix) {
		c.t.Fatalf("got %q, want %q", line, prefix)
	}
	return line
}

type validatorFunc func(introspect.Request) (introspect.Identity, error)

func (f validatorFunc) Validate(_ context.Context, r introspect.Request) (introspect.Identity, error) {
	return f(r)
}

type secretsFunc func(string) (backends.Secret, error)

func (f secretsFunc) Secret(_ context.Context, user string) (backends.Secret, error) { return f(user) }

type fixedLimiter time.Duration

func (fixedLimiter) Failed(netip.Addr, string)                {}
func (d fixedLimiter) Delay(netip.Addr, string) time.Duration { return time.Duration(d) }

// routerFor routes every login of the front ends' protocols to backend.
func routerFor(backend backends.Config) *backends.Router {
	var pcs []backends.PoolConfig
	defaults := map[string]string{}
	for _, p := range []string{imap.Protocol.Name, pop3.Protocol.Name, smtp.Protocol.Name, sieve.Protocol.Name} {
		pcs = append(pcs, backends.PoolConfig{Name: "backend", Protocol: p, Config: backend,
			Members: []backends.MemberConfig{{Address: backend.Address}}, HealthCheck: backends.HealthConfig{Disabled: true}})
		defaults[p] = "backend"
	}
	ps, err := backends.NewPools(pcs, defaults)
	if err != nil {
		panic(err)
	}
	return backends.NewRouter(ps, nil, backends.RoutesConfig{}, nil)
}
