package imap

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	gosasl "github.com/emersion/go-sasl"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/certs"
)

// secretMap is a test SecretSource.
type secretMap map[string]backends.Secret

func (m secretMap) Secret(_ context.Context, user string) (backends.Secret, error) {
	s, ok := m[user]
	if !ok {
		return "", backends.ErrUnknownUser
	}
	return s, nil
}

// env is one gateway in front of go-imap's in-memory server, with a demo issuer.
type env struct {
	issuer  *demoissuer.Issuer
	roots   *x509.CertPool
	implAdr string // implicit TLS listener
	stlsAdr string // STARTTLS listener
	servers map[string]*Server
}

type envOption func(*Server)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + hs.Listener.Addr().String()
	iss, err := demoissuer.New(issuerURL, map[string]string{"alice": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = iss.Handler()
	hs.Start()
	t.Cleanup(hs.Close)

	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice", "backend-secret")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         goimap.CapSet{goimap.CapIMAP4rev1: {}},
		InsecureAuth: true,
		Logger:       slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	})
	go backend.Serve(bln)
	t.Cleanup(func() { backend.Close() })

	v, err := introspect.New(context.Background(), introspect.Config{Issuers: []introspect.IssuerConfig{{
		Issuer: issuerURL, Mode: "jwt", Audience: []string{"saslgate"}, UsernameClaim: "sub",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{issuer: iss, roots: x509.NewCertPool(), servers: map[string]*Server{}}
	e.roots.AppendCertsFromPEM(certPEM)
	for _, mode := range []string{proxy.TLSImplicit, proxy.TLSStartTLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &Server{
			Listener:  proxy.ListenerConfig{Name: mode, Protocol: "imap", Address: ln.Addr().String(), TLS: mode},
			Config:    Config{Backend: backends.Config{Address: bln.Addr().String(), TLS: "none"}, ErrorReplyTimeout: 0},
			TLSConfig: certs.FromCertificate(cert).TLSConfig(),
			Login:     &proxy.Login{Validator: v, Secrets: secretMap{"alice": "backend-secret"}},
			Logger:    slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		}
		for _, o := range opts {
			o(srv)
		}
		if srv.Login.Router == nil {
			srv.Login.Router = backends.Single("imap", srv.Config.Backend)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		e.servers[mode] = srv
		if mode == proxy.TLSImplicit {
			e.implAdr = ln.Addr().String()
		} else {
			e.stlsAdr = ln.Addr().String()
		}
	}
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (e *env) token(t *testing.T, c demoissuer.Claims) string {
	t.Helper()
	if c.Subject == "" {
		c.Subject = "alice"
	}
	tok, err := e.issuer.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client is a line-level IMAP client for transcript tests.
type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (e *env) dial(t *testing.T, implicit bool) *client {
	t.Helper()
	addr := e.stlsAdr
	var nc net.Conn
	var err error
	if implicit {
		addr = e.implAdr
		nc, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
	} else {
		nc, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.expect("* OK [CAPABILITY ")
	return c
}

func (c *client) send(line string) {
	c.t.Helper()
	c.t.Logf("C: %.200s", line)
	if _, err := c.nc.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads one line and checks its prefix; it returns the line.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	line, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading reply, want %q: %v", prefix, err)
	}
	line = strings.TrimRight(line, "\r\n")
	c.t.Logf("S: %.200s", line)
	if !strings.HasPrefix(line, prefix) {
		c.t.Fatalf("got %q, want prefix %q", line, prefix)
	}
	return line
}

func (c *client) expectEOF() {
	c.t.Helper()
	if line, err := c.br.ReadString('\n'); err == nil {
		c.t.Fatalf("got %q, want the connection closed", line)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func oauthbearer(user, token string) string {
	return b64(string(sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: user, Host: "127.0.0.1", Port: 993, Token: token, CBFlag: 'n'})))
}

func xoauth2(user, token string) string { return b64(string(sasl.EncodeXOAuth2(user, token))) }

// errorStatus decodes an RFC 7628 error challenge line ("+ <base64 JSON>").
func errorStatus(t *testing.T, line string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(line, "+ "))
	if err != nil {
		t.Fatalf("challenge %q is not base64: %v", line, err)
	}
	var v struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("challenge %q is not JSON: %v", raw, err)
	}
	return v.Status
}

func TestCapabilities(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.send("a CAPABILITY")
	c.expect("* CAPABILITY IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2 LOGINDISABLED")
	c.expect("a OK ")
	c.send("b NOOP")
	c.expect("b OK ")
	c.send(`c ID ("name" "test" "version" NIL)`)
	c.expect(`* ID ("name" "saslgate")`)
	c.expect("c OK ")
	c.send("d LOGOUT")
	c.expect("* BYE ")
	c.expect("d OK ")
	c.expectEOF()
}

func TestAuthenticateSuccess(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, demoissuer.Claims{})
	cases := []struct {
		name  string
		steps func(c *client)
	}{
		{"OAUTHBEARER with SASL-IR", func(c *client) {
			c.send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("alice", tok))
		}},
		{"OAUTHBEARER without SASL-IR, no authzid", func(c *client) {
			c.send("a AUTHENTICATE OAUTHBEARER")
			c.expect("+ ")
			c.send(oauthbearer("", tok))
		}},
		{"XOAUTH2 with SASL-IR", func(c *client) {
			c.send("a authenticate xoauth2 " + xoauth2("alice", tok))
		}},
		{"XOAUTH2 without SASL-IR", func(c *client) {
			c.send("a AUTHENTICATE XOAUTH2")
			c.expect("+ ")
			c.send(xoauth2("alice", tok))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.t = t
			tc.steps(c)
			c.expect("a OK [CAPABILITY IMAP4rev1")
			c.send("b SELECT INBOX")
			for !strings.HasPrefix(c.expect(""), "b OK") {
			}
			c.send("c LOGOUT")
			c.expect("* BYE")
			c.expect("c OK")
			c.expectEOF()
		})
	}
}

// Commands pipelined behind AUTHENTICATE reach the backend, in order.
func TestPipelinedAfterAuthenticate(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})) + "\r\nb NOOP\r\nc LOGOUT")
	c.expect("a OK ")
	c.expect("b OK ")
	c.expect("* BYE")
	c.expect("c OK")
	c.expectEOF()
}

func TestAuthenticateFailures(t *testing.T) {
	e := newEnv(t)
	expired := e.token(t, demoissuer.Claims{TTL: -time.Hour})
	wrongAud := e.token(t, demoissuer.Claims{Audience: []string{"someone-else"}})
	crlfUser := e.token(t, demoissuer.Claims{Extra: map[string]any{"sub": "alice\r\nx"}})
	good := e.token(t, demoissuer.Claims{})
	cases := []struct {
		name, ir, reply string
	}{
		{"expired, AQ== reply", oauthbearer("", expired), "AQ=="},
		{"wrong audience, empty reply", oauthbearer("", wrongAud), ""},
		{"CRLF in username claim", oauthbearer("", crlfUser), "AQ=="},
		{"garbage token, initial response sent again", oauthbearer("", "abc.def.ghi"), oauthbearer("", "abc.def.ghi")},
		{"authzid is another user", oauthbearer("bob", good), "AQ=="},
		{"host mismatch ignored without public_host; wrong token", oauthbearer("", good+"x"), "AQ=="},
		{"XOAUTH2 expired", xoauth2("alice", expired), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.t = t
			c.send("a AUTHENTICATE " + map[bool]string{true: "XOAUTH2", false: "OAUTHBEARER"}[strings.HasPrefix(tc.name, "XOAUTH2")] + " " + tc.ir)
			line := c.expect("+ ")
			if st := errorStatus(t, line); st != "invalid_token" && st != "401" {
				t.Errorf("error status %q, want invalid_token (or 401 for XOAUTH2)", st)
			}
			c.send(tc.reply)
			c.expect("a NO [AUTHENTICATIONFAILED] ")
			// The connection is still usable.
			c.send("b NOOP")
			c.expect("b OK")
		})
	}
}

// A client that never answers the error challenge gets its NO after the
// short error-reply timeout, not the pre-auth timeout.
func TestSilentClientAfterErrorChallenge(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.ErrorReplyTimeout = config.Duration(200 * time.Millisecond) })
	c := e.dial(t, true)
	c.send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", "not-a-jwt"))
	c.expect("+ ")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	c.send("b NOOP")
	c.expect("b OK")
	// RFC 7628 §3.2.3: a bare kvsep gets the error challenge, no discovery needed.
	c.send("c AUTHENTICATE OAUTHBEARER " + b64("\x01"))
	if st := errorStatus(t, c.expect("+ ")); st != "invalid_request" {
		t.Errorf("bare kvsep: status %q, want invalid_request", st)
	}
	c.expect("c NO [AUTHENTICATIONFAILED]")
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.send("a AUTHENTICATE OAUTHBEARER")
	c.expect("+ ")
	c.send("*")
	c.expect("a BAD AUTHENTICATE cancelled")
	c.send("b AUTHENTICATE OAUTHBEARER !!notbase64")
	c.expect("b BAD ")
	c.send("c AUTHENTICATE PLAIN " + b64("\x00alice\x00pw"))
	c.expect("c NO ")
	c.send("d AUTHENTICATE OAUTHBEARER " + b64("garbage without kvsep"))
	c.expect("d BAD ")
	c.send("e SELECT INBOX")
	c.expect("e BAD ")
	c.send("f LOGIN alice secret")
	c.expect("f NO ")
	c.send("g " + strings.Repeat("x", DefaultMaxLineLength+10))
	c.expect("g BAD Line too long")
	c.send("h LOGIN {100000}")
	c.expect("h BAD Literal too large")
	c.send("i NOOP")
	c.expect("i OK")
	c.send("+tag NOOP")
	c.expect("* BAD Invalid tag")
	// Six BADs so far; the tenth ends the connection.
	for i := 0; i < DefaultMaxBadCommands-6; i++ {
		c.send("z FROBNICATE")
		c.expect("z BAD ")
	}
	c.expect("* BYE Too many invalid commands")
	c.expectEOF()
}

func TestSTARTTLS(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, false)
	c.send("a CAPABILITY")
	c.expect("* CAPABILITY IMAP4rev1 SASL-IR ID STARTTLS LOGINDISABLED")
	c.expect("a OK")
	c.send("b AUTHENTICATE OAUTHBEARER " + oauthbearer("", e.token(t, demoissuer.Claims{})))
	c.expect("b NO [PRIVACYREQUIRED] ")
	c.send("c LOGIN alice x")
	c.expect("c NO [PRIVACYREQUIRED] ")
	// STARTTLS, NOOP and LOGOUT take no arguments (RFC 9051 §6.1, §6.2.1); the connection
	// stays in plaintext.
	for _, cmd := range []string{"d STARTTLS foo", "e NOOP bar", "f LOGOUT now"} {
		c.send(cmd)
		c.expect(cmd[:2] + "BAD ")
	}
	// A command injected behind STARTTLS, in the same packet, is discarded.
	c.send("s STARTTLS\r\nx CAPABILITY")
	c.expect("s OK ")
	tc := tls.Client(c.nc, &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
	c.send("y CAPABILITY")
	c.expect("* CAPABILITY IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2")
	c.expect("y OK") // had x been executed, its reply would come first
	c.send("z STARTTLS")
	c.expect("z BAD ")
	c.send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("alice", e.token(t, demoissuer.Claims{})))
	c.expect("a OK ")
}

func TestLoginWithToken(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsLoginPassword = true })
	c := e.dial(t, true)
	c.send("a CAPABILITY")
	if line := c.expect("* CAPABILITY "); line != "* CAPABILITY IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2" {
		t.Errorf("with token LOGIN allowed, got %q, want no LOGINDISABLED", line)
	}
	c.expect("a OK")
}

func TestLoginWithTokenAccepted(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsLoginPassword = true })
	c := e.dial(t, true)
	c.send(`a LOGIN alice "not-a-token"`)
	c.expect("a NO [AUTHENTICATIONFAILED]")
	tok := e.token(t, demoissuer.Claims{})
	c.send("b LOGIN alice {" + strconv.Itoa(len(tok)) + "}")
	c.expect("+ ")
	c.send(tok)
	c.expect("b OK ")
}

// Trouble behind the token check is temporary: NO [UNAVAILABLE].
func TestUnavailable(t *testing.T) {
	t.Run("backend down", func(t *testing.T) {
		e := newEnv(t, func(s *Server) { s.Config.Backend.Address = "127.0.0.1:1" })
		c := e.dial(t, true)
		c.send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
		c.expect("a NO [UNAVAILABLE] ")
	})
	t.Run("backend rejects secret", func(t *testing.T) {
		e := newEnv(t, func(s *Server) { s.Login.Secrets = secretMap{"alice": "wrong"} })
		c := e.dial(t, true)
		c.send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
		c.expect("a NO [UNAVAILABLE] ")
	})
	t.Run("IdP down", func(t *testing.T) {
		e := newEnv(t, func(s *Server) {
			v, err := introspect.New(context.Background(), introspect.Config{Issuers: []introspect.IssuerConfig{{
				Issuer: "http://127.0.0.1:1", Mode: "jwt", Audience: []string{"saslgate"}, UsernameClaim: "sub",
			}}})
			if err != nil {
				t.Fatal(err)
			}
			s.Login.Validator = v
		})
		tok, err := mintFor(e, "http://127.0.0.1:1")
		if err != nil {
			t.Fatal(err)
		}
		c := e.dial(t, true)
		c.send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", tok))
		c.expect("a NO [UNAVAILABLE] ")
	})
}

// mintFor mints a token naming another issuer, routed to that issuer's config.
func mintFor(e *env, iss string) (string, error) {
	return e.issuer.Mint(demoissuer.Claims{Subject: "alice", Extra: map[string]any{"iss": iss}})
}

func TestPreauthTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.PreauthTimeout = config.Duration(300 * time.Millisecond) })
	c := e.dial(t, true)
	c.expect("* BYE ")
	c.expectEOF()
}

// go-imap's own client, with go-sasl's OAUTHBEARER client, works end to end.
func TestIMAPClient(t *testing.T) {
	e := newEnv(t)
	cl, err := imapclient.DialTLS(e.implAdr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tok := e.token(t, demoissuer.Claims{})
	if err := cl.Authenticate(gosasl.NewOAuthBearerClient(&gosasl.OAuthBearerOptions{Username: "alice", Token: tok})); err != nil {
		t.Fatal(err)
	}
	mbox, err := cl.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if mbox.NumMessages != 0 {
		t.Errorf("INBOX has %d messages, want 0", mbox.NumMessages)
	}
	bad, err := imapclient.DialTLS(e.implAdr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Authenticate(gosasl.NewOAuthBearerClient(&gosasl.OAuthBearerOptions{Username: "alice", Token: "nope"}))
	// go-sasl's client reports the RFC 7628 error status itself.
	if err == nil || !strings.Contains(err.Error(), "invalid_token") {
		t.Errorf("bad token: err = %v, want an invalid_token failure", err)
	}
	// go-imap's client does not answer the error challenge (SPECS.md: some
	// clients stay silent), so its next command would be taken as that answer:
	// nothing more to check on this connection.
}

// recordingLimiter is a proxy.AuthLimiter that records what the front end reports.
type recordingLimiter struct {
	mu     sync.Mutex
	failed []string // "address user"
	delays []string // what each Delay asked for, "address user"
}

func (r *recordingLimiter) Failed(ip netip.Addr, user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, ip.String()+" "+user)
}

func (r *recordingLimiter) Delay(ip netip.Addr, user string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delays = append(r.delays, ip.String()+" "+user)
	return time.Millisecond
}

// Every authentication asks the limiter for its address's delay, and for the user's once the
// SASL message names one; a refused token is reported as a failure under the client's address
// (and the user it named: none here); a success erases nothing, so it is not reported.
func TestAuthLimiterReports(t *testing.T) {
	rl := &recordingLimiter{}
	e := newEnv(t, func(s *Server) { s.Login.Limiter = rl })
	c := e.dial(t, true)
	c.send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", "not-a-token"))
	c.expect("+ ")
	c.send("AQ==")
	c.expect("a NO [AUTHENTICATIONFAILED] ")
	c.send("b LOGIN alice whatever")
	c.expect("b NO ")
	c.send("c AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
	c.expect("c OK ")
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if want := []string{"127.0.0.1 "}; !slices.Equal(rl.failed, want) {
		t.Errorf("failures reported %q, want %q", rl.failed, want)
	}
	if want := []string{"127.0.0.1 ", "127.0.0.1 ", "127.0.0.1 alice"}; !slices.Equal(rl.delays, want) {
		t.Errorf("delays asked %q, want %q", rl.delays, want)
	}
}

// fixedDelay is a proxy.AuthLimiter that asks every authentication to wait as long as itself.
type fixedDelay time.Duration

func (fixedDelay) Failed(netip.Addr, string)                {}
func (d fixedDelay) Delay(netip.Addr, string) time.Duration { return time.Duration(d) }

// The limiter's delay is served, not just asked for: the tagged NO comes no sooner than
// the delay after the client's last line. The delay runs when the command arrives, before
// any challenge, so the AUTHENTICATE rows send their reply to the error challenge along
// with the command.
func TestAuthDelayHoldsAnswer(t *testing.T) {
	const delay = 300 * time.Millisecond
	e := newEnv(t, func(s *Server) {
		s.Login.Limiter = fixedDelay(delay)
		s.Config.AllowTokenAsLoginPassword = true
	})
	for _, tc := range []struct {
		name    string
		lines   string   // sent in one write
		replies []string // prefixes, the last one timed
	}{
		{"LOGIN", `a LOGIN alice "not-a-token"`, []string{"a NO [AUTHENTICATIONFAILED]"}},
		{"OAUTHBEARER", "a AUTHENTICATE OAUTHBEARER " + oauthbearer("", "not-a-token") + "\r\nAQ==", []string{"+ ", "a NO [AUTHENTICATIONFAILED]"}},
		{"XOAUTH2", "a AUTHENTICATE XOAUTH2 " + xoauth2("alice", "not-a-token") + "\r\n", []string{"+ ", "a NO [AUTHENTICATIONFAILED]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			sent := time.Now() // before the write: the server cannot start waiting earlier
			c.send(tc.lines)
			for _, r := range tc.replies {
				c.expect(r)
			}
			if d := time.Since(sent); d < delay || d > 5*time.Second {
				t.Errorf("tagged NO %v after the client's last line, want between %v and 5s", d, delay)
			}
		})
	}
}
