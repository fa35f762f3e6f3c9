package sieve

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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

// fakeCapabilities is what fakeBackend announces before authentication, SASL aside: some to
// pass on, some that saslgate answers for itself or keeps from the client.
var fakeCapabilities = []string{
	`"IMPLEMENTATION" "FakeSieve 1.0"`,
	`"SIEVE" "fileinto vacation"`,
	`"NOTIFY" "mailto"`,
	`"MAXREDIRECTS" "4"`,
	`"XCLIENT"`,
	`"UNAUTHENTICATE"`,
	`"STARTTLS"`,
	`"VERSION" "1.0"`,
}

// passedFakeCapabilities are the lines of fakeCapabilities a client of saslgate sees.
var passedFakeCapabilities = []string{
	`"SIEVE" "fileinto vacation"`,
	`"NOTIFY" "mailto"`,
	`"MAXREDIRECTS" "4"`,
	`"VERSION" "1.0"`,
}

// fakeBackend is an in-process ManageSieve server in the manner of Dovecot Pigeonhole, on
// loopback: alice logs in with AUTHENTICATE "PLAIN" and the password "backend-secret", and
// has a script store in memory. X-DROP makes it close the connection without a word.
type fakeBackend struct {
	t    *testing.T
	addr string

	mu      sync.Mutex
	caps    []string
	scripts map[string]string
	active  string
	logins  int
}

func newFakeBackend(t *testing.T) *fakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{t: t, addr: ln.Addr().String(), caps: fakeCapabilities, scripts: map[string]string{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				b.serve(nc)
			}()
		}
	}()
	return b
}

func (b *fakeBackend) setCaps(caps []string) {
	b.mu.Lock()
	b.caps = caps
	b.mu.Unlock()
}

func (b *fakeBackend) loginCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logins
}

func (b *fakeBackend) serve(nc net.Conn) {
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	w := bufio.NewWriter(nc)
	r := &lineReader{br: bufio.NewReader(nc), maxLine: 64 << 10, maxLiteral: 64 << 10}
	b.mu.Lock()
	caps := b.caps
	b.mu.Unlock()
	capability := func(authed bool) {
		for _, c := range caps {
			w.WriteString(c + "\r\n")
		}
		if authed {
			w.WriteString(`"OWNER" "alice"` + "\r\n")
		} else {
			w.WriteString(`"SASL" "PLAIN"` + "\r\n")
		}
	}
	capability(false)
	w.WriteString("OK \"FakeSieve ready.\"\r\n")
	authed := false
	for {
		if w.Flush() != nil {
			return
		}
		items, err := r.read()
		if err != nil {
			return
		}
		cmd, err := parseCommand(items)
		if err != nil {
			w.WriteString("NO \"syntax\"\r\n")
			continue
		}
		arg := func(i int) string {
			if i < len(cmd.args) {
				return cmd.args[i].s
			}
			return ""
		}
		b.mu.Lock()
		switch {
		case cmd.name == "LOGOUT":
			w.WriteString("OK \"Logout completed.\"\r\n")
			w.Flush()
			b.mu.Unlock()
			return
		case cmd.name == "X-DROP":
			b.mu.Unlock()
			return
		case cmd.name == "CAPABILITY":
			capability(authed)
			w.WriteString("OK \"Capability completed.\"\r\n")
		case cmd.name == "NOOP":
			w.WriteString("OK \"NOOP completed.\"\r\n")
		case !authed && cmd.name == "AUTHENTICATE" && strings.EqualFold(arg(0), "PLAIN"):
			msg, _ := base64.StdEncoding.DecodeString(arg(1))
			if string(msg) != "\x00alice\x00backend-secret" {
				w.WriteString("NO \"Authentication failed.\"\r\n")
				break
			}
			authed = true
			b.logins++
			w.WriteString("OK \"Logged in.\"\r\n")
		case !authed:
			w.WriteString("NO \"Authenticate first.\"\r\n")
		case cmd.name == "LISTSCRIPTS":
			names := make([]string, 0, len(b.scripts))
			for n := range b.scripts {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				w.WriteString(sieveString(n))
				if n == b.active {
					w.WriteString(" ACTIVE")
				}
				w.WriteString("\r\n")
			}
			w.WriteString("OK \"Listscripts completed.\"\r\n")
		case cmd.name == "PUTSCRIPT" && len(cmd.args) == 2:
			b.scripts[arg(0)] = arg(1)
			w.WriteString("OK \"Putscript completed.\"\r\n")
		case cmd.name == "GETSCRIPT":
			s, ok := b.scripts[arg(0)]
			if !ok {
				w.WriteString("NO (NONEXISTENT) \"Script does not exist.\"\r\n")
				break
			}
			w.WriteString("{" + strconv.Itoa(len(s)) + "}\r\n" + s + "\r\nOK \"Getscript completed.\"\r\n")
		case cmd.name == "SETACTIVE":
			b.active = arg(0)
			w.WriteString("OK \"Setactive completed.\"\r\n")
		default:
			w.WriteString("NO \"Unknown command.\"\r\n")
		}
		b.mu.Unlock()
	}
}

// env is one gateway in front of a fakeBackend, with a demo issuer.
type env struct {
	issuer  *demoissuer.Issuer
	roots   *x509.CertPool
	backend *fakeBackend
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
	e := &env{issuer: iss, roots: x509.NewCertPool(), backend: newFakeBackend(t), servers: map[string]*Server{}}
	e.roots.AppendCertsFromPEM(certPEM)
	for _, mode := range []string{proxy.TLSImplicit, proxy.TLSStartTLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		be := backends.Config{Address: e.backend.addr, TLS: "none"}
		srv := &Server{
			Listener:  proxy.ListenerConfig{Name: mode, Protocol: "sieve", Address: ln.Addr().String(), TLS: mode},
			Config:    Config{Backend: be},
			TLSConfig: certs.FromCertificate(cert).TLSConfig(),
			Login:     &proxy.Login{Validator: v, Secrets: secretMap{"alice": "backend-secret"}, Router: backends.Single("sieve", be)},
			Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		}
		for _, o := range opts {
			o(srv)
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

// client is a line-level ManageSieve client for transcript tests.
type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dial connects and reads the greeting, which it returns without its OK.
func (e *env) dial(t *testing.T, implicit bool) (*client, []string) {
	t.Helper()
	var nc net.Conn
	var err error
	if implicit {
		nc, err = tls.Dial("tcp", e.implAdr, &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
	} else {
		nc, err = net.Dial("tcp", e.stlsAdr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	return c, c.capabilities(`OK "saslgate ready."`)
}

func (c *client) send(line string) {
	c.t.Helper()
	c.t.Logf("C: %.200q", line)
	if _, err := c.nc.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	line, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading a line: %v", err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", line)
	}
	line = strings.TrimSuffix(line, "\r\n")
	c.t.Logf("S: %.200q", line)
	return line
}

// expect reads one line and checks its prefix; it returns the line.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	line := c.line()
	if !strings.HasPrefix(line, prefix) {
		c.t.Fatalf("got %q, want prefix %q", line, prefix)
	}
	return line
}

// capabilities reads capability lines up to the line end, which must follow them.
func (c *client) capabilities(end string) []string {
	c.t.Helper()
	var caps []string
	for {
		line := c.line()
		if !strings.HasPrefix(line, `"`) {
			if line != end {
				c.t.Fatalf("after the capabilities %q: got %q, want %q", caps, line, end)
			}
			return caps
		}
		caps = append(caps, line)
	}
}

func (c *client) expectEOF() {
	c.t.Helper()
	if line, err := c.br.ReadString('\n'); err == nil {
		c.t.Fatalf("got %q, want the connection closed", line)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func oauthbearer(user, token string) string {
	return b64(string(sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: user, Host: "127.0.0.1", Port: 4190, Token: token, CBFlag: 'n'})))
}

func xoauth2(user, token string) string { return b64(string(sasl.EncodeXOAuth2(user, token))) }

// literal is s as a non-synchronising literal (RFC 5804 literal-c2s).
func literal(s string) string { return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s }

// errorStatus decodes an RFC 7628 error challenge line (a quoted string of base64 JSON).
func errorStatus(t *testing.T, line string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.Trim(line, `"`))
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

func withOwn(own ...string) []string {
	return append(own, passedFakeCapabilities...)
}

// The greeting and CAPABILITY list saslgate's own capabilities, then the backend's, less
// those that describe the backend's own login.
func TestCapabilities(t *testing.T) {
	e := newEnv(t)
	c, greeting := e.dial(t, true)
	want := withOwn(`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`)
	if !slices.Equal(greeting, want) {
		t.Errorf("greeting:\n%q\nwant\n%q", greeting, want)
	}
	c.send("CAPABILITY")
	if got := c.capabilities(`OK "Capability completed."`); !slices.Equal(got, want) {
		t.Errorf("CAPABILITY:\n%q\nwant\n%q", got, want)
	}
	c.send("noop")
	c.expect(`OK "NOOP completed."`)
	c.send(`NOOP "STARTTLS-SYNC-42"`)
	c.expect(`OK (TAG "STARTTLS-SYNC-42") "Done."`)
	c.send("NOOP " + literal("a\"b"))
	c.expect(`OK (TAG "a\"b") "Done."`)
	c.send("LOGOUT")
	c.expect(`OK "Logout completed."`)
	c.expectEOF()
}

// RFC 5804 §2.2: before TLS, no mechanisms and STARTTLS; AUTHENTICATE is refused; after the
// handshake the capabilities come unasked; bytes sent behind STARTTLS are dropped.
func TestSTARTTLS(t *testing.T) {
	e := newEnv(t)
	c, greeting := e.dial(t, false)
	want := withOwn(`"IMPLEMENTATION" "saslgate"`, `"SASL" ""`, `"STARTTLS"`)
	if !slices.Equal(greeting, want) {
		t.Errorf("greeting:\n%q\nwant\n%q", greeting, want)
	}
	c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", e.token(t, demoissuer.Claims{})) + `"`)
	c.expect(`NO (ENCRYPT-NEEDED) `)
	c.send("STARTTLS now")
	c.expect("NO ")
	// A command injected behind STARTTLS, in the same packet, is discarded.
	c.send("STARTTLS\r\nCAPABILITY")
	c.expect(`OK "Begin TLS negotiation now."`)
	tc := tls.Client(c.nc, &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
	after := c.capabilities(`OK "TLS negotiation successful."`)
	if want := withOwn(`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`); !slices.Equal(after, want) {
		t.Errorf("capabilities after STARTTLS:\n%q\nwant\n%q", after, want)
	}
	c.send("NOOP")
	c.expect(`OK "NOOP completed."`) // had CAPABILITY been executed, its lines would come first
	c.send("STARTTLS")
	c.expect("NO ")
	c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", e.token(t, demoissuer.Claims{})) + `"`)
	c.expect(`OK "Logged in."`)
}

// After the login the session is the backend's: scripts go to alice's store.
func TestAuthenticateSuccess(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, demoissuer.Claims{})
	cases := []struct {
		name  string
		steps func(c *client)
	}{
		{"OAUTHBEARER, initial response quoted", func(c *client) {
			c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", tok) + `"`)
		}},
		{"OAUTHBEARER, initial response a literal", func(c *client) {
			c.send(`AUTHENTICATE "OAUTHBEARER" ` + literal(oauthbearer("alice", tok)))
		}},
		{"OAUTHBEARER, initial response a synchronising-style literal", func(c *client) {
			ir := oauthbearer("alice", tok)
			c.send(`AUTHENTICATE "OAUTHBEARER" {` + strconv.Itoa(len(ir)) + "}\r\n" + ir)
		}},
		{"OAUTHBEARER, mechanism a literal, no initial response, response quoted", func(c *client) {
			c.send("AUTHENTICATE " + literal("OAUTHBEARER"))
			c.expect(`""`)
			c.send(`"` + oauthbearer("", tok) + `"`)
		}},
		{"XOAUTH2 in lower case, no initial response, response a literal", func(c *client) {
			c.send(`Authenticate "xoauth2"`)
			c.expect(`""`)
			c.send(literal(xoauth2("alice", tok)))
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := e.dial(t, true)
			c.t = t
			tc.steps(c)
			c.expect(`OK "Logged in."`)
			name := "script" + strconv.Itoa(i)
			script := "require \"fileinto\";\r\nfileinto \"Spam\";\r\n"
			c.send(`PUTSCRIPT "` + name + `" ` + literal(script))
			c.expect(`OK "Putscript completed."`)
			c.send(`SETACTIVE "` + name + `"`)
			c.expect("OK ")
			c.send("LISTSCRIPTS")
			for !strings.HasPrefix(c.line(), "OK ") {
			}
			c.send(`GETSCRIPT "` + name + `"`)
			c.expect("{" + strconv.Itoa(len(script)) + "}")
			got := make([]byte, len(script))
			if _, err := io.ReadFull(c.br, got); err != nil || string(got) != script {
				t.Errorf("GETSCRIPT gave %q, %v; want %q", got, err, script)
			}
			c.expect("") // the CRLF after the literal
			c.expect(`OK "Getscript completed."`)
			// Post-login capabilities are the backend's own.
			c.send("CAPABILITY")
			if caps := c.capabilities(`OK "Capability completed."`); !slices.Contains(caps, `"OWNER" "alice"`) {
				t.Errorf("CAPABILITY after the login: %q, want the backend's (OWNER)", caps)
			}
			c.send("LOGOUT")
			c.expect(`OK "Logout completed."`)
			c.expectEOF() // and no BYE: the backend closed after answering LOGOUT
		})
	}
	if n := e.backend.loginCount(); n != len(cases) {
		t.Errorf("backend logins: %d, want %d", n, len(cases))
	}
}

// Commands pipelined behind AUTHENTICATE reach the backend, in order.
func TestPipelinedAfterAuthenticate(t *testing.T) {
	e := newEnv(t)
	c, _ := e.dial(t, true)
	c.send(`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", e.token(t, demoissuer.Claims{})) + "\"\r\nPUTSCRIPT \"p\" " + literal("keep;") + "\r\nLISTSCRIPTS\r\nLOGOUT")
	c.expect(`OK "Logged in."`)
	c.expect(`OK "Putscript completed."`)
	c.expect(`"p"`)
	c.expect(`OK "Listscripts completed."`)
	c.expect(`OK "Logout completed."`)
	c.expectEOF()
}

func TestAuthenticateFailures(t *testing.T) {
	e := newEnv(t)
	expired := e.token(t, demoissuer.Claims{TTL: -time.Hour})
	wrongAud := e.token(t, demoissuer.Claims{Audience: []string{"someone-else"}})
	good := e.token(t, demoissuer.Claims{})
	cases := []struct {
		name, mech, ir, reply string
	}{
		{"expired, AQ== reply", "OAUTHBEARER", oauthbearer("", expired), `"AQ=="`},
		{"wrong audience, empty reply", "OAUTHBEARER", oauthbearer("", wrongAud), `""`},
		{"garbage token, reply a literal", "OAUTHBEARER", oauthbearer("", "abc.def.ghi"), literal("AQ==")},
		{"authzid is another user, cancel as the reply", "OAUTHBEARER", oauthbearer("bob", good), `"*"`},
		{"XOAUTH2 expired, reply junk", "XOAUTH2", xoauth2("alice", expired), "junk ( junk"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := e.dial(t, true)
			c.t = t
			c.send(`AUTHENTICATE "` + tc.mech + `" "` + tc.ir + `"`)
			line := c.expect(`"`)
			if st := errorStatus(t, line); st != "invalid_token" && st != "401" {
				t.Errorf("error status %q, want invalid_token (or 401 for XOAUTH2)", st)
			}
			c.send(tc.reply)
			c.expect(`NO "Authentication failed."`)
			// The connection is still usable.
			c.send("NOOP")
			c.expect(`OK "NOOP completed."`)
		})
	}
}

// A client that never answers the error challenge gets its NO after the short error-reply
// timeout, not the pre-auth timeout.
func TestSilentClientAfterErrorChallenge(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.ErrorReplyTimeout = config.Duration(200 * time.Millisecond) })
	c, _ := e.dial(t, true)
	c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", "not-a-jwt") + `"`)
	c.expect(`"`)
	c.expect(`NO "Authentication failed."`)
	c.send("NOOP")
	c.expect("OK ")
	// RFC 7628 §3.2.3: a bare kvsep gets the error challenge, no discovery needed.
	c.send(`AUTHENTICATE "OAUTHBEARER" "` + b64("\x01") + `"`)
	if st := errorStatus(t, c.expect(`"`)); st != "invalid_request" {
		t.Errorf("bare kvsep: status %q, want invalid_request", st)
	}
	c.expect(`NO "Authentication failed."`)
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	c, _ := e.dial(t, true)
	c.send(`AUTHENTICATE "OAUTHBEARER"`)
	c.expect(`""`)
	c.send(`"*"`)
	c.expect(`NO "Authentication cancelled."`)
	c.send(`AUTHENTICATE "PLAIN" "` + b64("\x00alice\x00pw") + `"`)
	c.expect(`NO "Unsupported authentication mechanism."`)
	// Not counted so far: a cancel and an unsupported mechanism are answers, not mistakes.
	steps := []struct{ send, want string }{
		{`AUTHENTICATE "OAUTHBEARER" "!!notbase64"`, `NO "Invalid base64 in initial response"`},
		{`AUTHENTICATE "OAUTHBEARER" "` + b64("garbage without kvsep") + `"`, `NO "Malformed OAUTHBEARER message"`},
		{`AUTHENTICATE OAUTHBEARER`, `NO "AUTHENTICATE takes a mechanism name and an optional initial response, as strings"`},
		{`PUTSCRIPT "x" ` + literal("keep;"), `NO "Authenticate first"`},
		{"LISTSCRIPTS", `NO "Authenticate first"`},
		{`FROB "` + strings.Repeat("x", DefaultMaxLineLength) + `"`, `NO "Line too long"`},
		{`NOOP "a\z"`, `NO "Invalid escape in quoted string"`},
		{`NOOP "open`, `NO "Unterminated quoted string"`},
		{"", `NO "Empty command"`},
	}
	for _, s := range steps {
		c.send(s.send)
		c.expect(s.want)
	}
	c.send("FROBNICATE")
	c.expect(`NO "Unknown command"`)
	c.expect(`BYE "Too many invalid commands."`)
	c.expectEOF()
}

// A literal too large cannot be skipped: BYE, and the connection closes.
func TestLiteralTooLarge(t *testing.T) {
	e := newEnv(t)
	for _, line := range []string{
		`AUTHENTICATE "OAUTHBEARER" {100000+}`,
		`AUTHENTICATE "OAUTHBEARER" {100000}`,
		`PUTSCRIPT "` + strings.Repeat("x", DefaultMaxLineLength) + `" {5+}`,
	} {
		c, _ := e.dial(t, true)
		c.send(line)
		c.expect(`BYE "`)
		c.expectEOF()
	}
	// After the error challenge too.
	c, _ := e.dial(t, true)
	c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", "not-a-jwt") + `"`)
	c.expect(`"`)
	c.send("{100000+}")
	c.expect(`BYE "Literal too large"`)
	c.expectEOF()
}

// Trouble behind the token check is temporary: NO (TRYLATER).
func TestUnavailable(t *testing.T) {
	t.Run("backend down", func(t *testing.T) {
		e := newEnv(t, func(s *Server) {
			be := backends.Config{Address: "127.0.0.1:1", TLS: "none"}
			s.Config.Backend, s.Login.Router = be, backends.Single("sieve", be)
		})
		c, greeting := e.dial(t, true)
		// The probe failed: saslgate still names the capabilities RFC 5804 requires.
		if want := []string{`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`, `"SIEVE" ""`, `"VERSION" "1.0"`}; !slices.Equal(greeting, want) {
			t.Errorf("greeting %q, want %q", greeting, want)
		}
		c.send(`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", e.token(t, demoissuer.Claims{})) + `"`)
		c.expect(`NO (TRYLATER) `)
	})
	t.Run("backend rejects the secret", func(t *testing.T) {
		e := newEnv(t, func(s *Server) { s.Login.Secrets = secretMap{"alice": "wrong"} })
		c, _ := e.dial(t, true)
		c.send(`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", e.token(t, demoissuer.Claims{})) + `"`)
		c.expect(`NO (TRYLATER) `)
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
		tok, err := e.issuer.Mint(demoissuer.Claims{Subject: "alice", Extra: map[string]any{"iss": "http://127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := e.dial(t, true)
		c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", tok) + `"`)
		c.expect(`NO (TRYLATER) `)
	})
}

func TestPreauthTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.PreauthTimeout = config.Duration(300 * time.Millisecond) })
	c, _ := e.dial(t, true)
	c.expect(`BYE "Autologout; authentication took too long."`)
	c.expectEOF()
}

// A backend that goes away mid-session without a BYE: the client is told.
func TestBackendLost(t *testing.T) {
	e := newEnv(t)
	c, _ := e.dial(t, true)
	c.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", e.token(t, demoissuer.Claims{})) + `"`)
	c.expect(`OK "Logged in."`)
	time.Sleep(logoutGrace + 100*time.Millisecond) // the login's OK is no LOGOUT's
	c.send("X-DROP")
	c.expect(`BYE (TRYLATER) "Backend connection lost."`)
	c.expectEOF()
}

// A drain ends sessions the protocol's way: BYE (TRYLATER), before and after the login.
func TestShutdownSaysBye(t *testing.T) {
	e := newEnv(t)
	pre, _ := e.dial(t, true)
	post, _ := e.dial(t, true)
	post.send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", e.token(t, demoissuer.Claims{})) + `"`)
	post.expect(`OK "Logged in."`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- e.servers[proxy.TLSImplicit].Shutdown(ctx) }()
	for _, c := range []*client{pre, post} {
		c.expect(`BYE (TRYLATER) "Server shutting down, please reconnect."`)
		c.expectEOF()
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
}

// The backend's capabilities are read again every CapabilitiesRefresh.
func TestCapabilitiesRefresh(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.CapabilitiesRefresh = config.Duration(50 * time.Millisecond) })
	// Serve probes before it accepts: this greeting has what the backend offered then.
	c, greeting := e.dial(t, true)
	c.send("LOGOUT")
	if want := withOwn(`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`); !slices.Equal(greeting, want) {
		t.Fatalf("first greeting %q, want %q", greeting, want)
	}
	e.backend.setCaps([]string{`"IMPLEMENTATION" "FakeSieve 2.0"`, `"SIEVE" "fileinto vacation date"`, `"VERSION" "1.0"`})
	want := []string{`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`, `"SIEVE" "fileinto vacation date"`, `"VERSION" "1.0"`}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, greeting := e.dial(t, true)
		c.send("LOGOUT")
		if slices.Equal(greeting, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("greeting %q, want the backend's new capabilities: %q", greeting, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	good := backends.Config{Address: "127.0.0.1:4190", TLS: "none"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" valid
	}{
		{"backend", Config{Backend: good}, ""},
		{"pool", Config{Pool: "sieve"}, ""},
		{"neither", Config{}, "one is required"},
		{"xclient", Config{Backend: backends.Config{Address: "127.0.0.1:4190", TLS: "none", Login: backends.LoginXClient}}, `sieve.backend.login: "xclient" is for SMTP`},
		{"negative timeout", Config{Backend: good, PreauthTimeout: -1}, "sieve.preauth_timeout"},
		{"negative refresh", Config{Backend: good, CapabilitiesRefresh: -1}, "sieve.capabilities_refresh"},
		{"short line", Config{Backend: good, MaxLineLength: 100}, "sieve.max_line_length"},
		{"negative literal", Config{Backend: good, MaxLiteralSize: -1}, "sieve.max_literal_size"},
		{"negative bad commands", Config{Backend: good, MaxBadCommands: -1}, "sieve.max_bad_commands"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want valid", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}

// The framer finds the ends of responses: OK, NO or BYE lines, after multi-line data and
// literals (GETSCRIPT) alike; the backend's loss is told unless it said BYE or just answered
// OK (to LOGOUT).
func TestResponseBoundary(t *testing.T) {
	for _, tc := range []struct {
		name    string
		feed    []string
		between bool
		lost    string
	}{
		{"nothing yet", nil, true, byeLost},
		{"OK", []string{"OK \"done\"\r\n"}, true, ""},
		{"listing in progress", []string{"\"a\" ACTIVE\r\n\"b\"\r\n"}, false, byeLost},
		{"listing done", []string{"\"a\" ACTIVE\r\n", "\"b\"\r\nOK\r\n"}, true, ""},
		{"half a line", []string{"OK \"do"}, false, byeLost},
		{"literal open", []string{"{10}\r\nOK\r\nOK\r\n"}, false, byeLost},
		{"literal done", []string{"{10}\r\nOK\r\nOK\r\n", "ab\r\n", "ok\r\n"}, true, ""},
		{"literal split", []string{"{3", "}\r\nab", "c\r\nNO (NONEXISTENT) \"x\"\r\n"}, true, byeLost},
		{"BYE", []string{"BYE \"Disconnected for inactivity.\"\r\n"}, true, ""},
		{"NO is no logout", []string{"NO \"x\"\r\n"}, true, byeLost},
		{"OKAY is no OK", []string{"OKAY\r\n"}, false, byeLost},
	} {
		r := &responseBoundary{}
		for _, f := range tc.feed {
			r.Feed([]byte(f))
		}
		if got := r.Between(); got != tc.between {
			t.Errorf("%s: Between = %v, want %v", tc.name, got, tc.between)
		}
		if got := r.Lost(); got != tc.lost {
			t.Errorf("%s: Lost = %q, want %q", tc.name, got, tc.lost)
		}
	}
}
