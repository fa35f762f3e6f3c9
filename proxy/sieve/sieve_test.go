package sieve

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
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
	"github.com/saslgate/saslgate/proxy/internal/fetest"
)

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
	*fetest.Gateway[*Server]
	backend *fakeBackend
}

type envOption func(*Server)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{backend: newFakeBackend(t)}
	e.Gateway = fetest.Start(t, fetest.Setup{Protocol: "sieve", LogLevel: slog.LevelDebug}, func(l fetest.Listener) *Server {
		be := backends.Config{Address: e.backend.addr, TLS: "none"}
		l.Login.Router = backends.Single("sieve", be)
		srv := &Server{Listener: l.Config, Config: Config{Backend: be}, TLSConfig: l.TLS, Login: l.Login, Logger: l.Logger}
		for _, o := range opts {
			o(srv)
		}
		return srv
	})
	return e
}

// client is a line-level ManageSieve client for transcript tests.
type client struct{ *fetest.Client }

// dial connects and reads the greeting, which it returns without its OK.
func (e *env) dial(t *testing.T, implicit bool) (*client, []string) {
	t.Helper()
	c := &client{e.Dial(t, implicit)}
	return c, c.capabilities(`OK "saslgate ready."`)
}

// capabilities reads capability lines up to the line end, which must follow them.
func (c *client) capabilities(end string) []string {
	c.T.Helper()
	var caps []string
	for {
		line := c.Line()
		if !strings.HasPrefix(line, `"`) {
			if line != end {
				c.T.Fatalf("after the capabilities %q: got %q, want %q", caps, line, end)
			}
			return caps
		}
		caps = append(caps, line)
	}
}

var b64, xoauth2 = fetest.B64, fetest.XOAuth2

func oauthbearer(user, token string) string { return fetest.OAuthBearer(user, token, 4190) }

// literal is s as a non-synchronising literal (RFC 5804 literal-c2s).
func literal(s string) string { return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s }

// errorStatus decodes an RFC 7628 error challenge line (a quoted string of base64 JSON).
func errorStatus(t *testing.T, line string) string {
	t.Helper()
	return fetest.ErrorStatus(t, strings.Trim(line, `"`))
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
	c.Send("CAPABILITY")
	if got := c.capabilities(`OK "Capability completed."`); !slices.Equal(got, want) {
		t.Errorf("CAPABILITY:\n%q\nwant\n%q", got, want)
	}
	c.Send("noop")
	c.Expect(`OK "NOOP completed."`)
	c.Send(`NOOP "STARTTLS-SYNC-42"`)
	c.Expect(`OK (TAG "STARTTLS-SYNC-42") "Done."`)
	c.Send("NOOP " + literal("a\"b"))
	c.Expect(`OK (TAG "a\"b") "Done."`)
	c.Send("LOGOUT")
	c.Expect(`OK "Logout completed."`)
	c.ExpectEOF()
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
	c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", e.Issuer.Token(t, demoissuer.Claims{})) + `"`)
	c.Expect(`NO (ENCRYPT-NEEDED) `)
	c.Send("STARTTLS now")
	c.Expect("NO ")
	// A command injected behind STARTTLS, in the same packet, is discarded.
	c.Send("STARTTLS\r\nCAPABILITY")
	c.Expect(`OK "Begin TLS negotiation now."`)
	c.StartTLS(e.Cert.ClientTLS())
	after := c.capabilities(`OK "TLS negotiation successful."`)
	if want := withOwn(`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`); !slices.Equal(after, want) {
		t.Errorf("capabilities after STARTTLS:\n%q\nwant\n%q", after, want)
	}
	c.Send("NOOP")
	c.Expect(`OK "NOOP completed."`) // had CAPABILITY been executed, its lines would come first
	c.Send("STARTTLS")
	c.Expect("NO ")
	c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", e.Issuer.Token(t, demoissuer.Claims{})) + `"`)
	c.Expect(`OK "Logged in."`)
}

// After the login the session is the backend's: scripts go to alice's store.
func TestAuthenticateSuccess(t *testing.T) {
	e := newEnv(t)
	tok := e.Issuer.Token(t, demoissuer.Claims{})
	cases := []struct {
		name  string
		steps func(c *client)
	}{
		{"OAUTHBEARER, initial response quoted", func(c *client) {
			c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", tok) + `"`)
		}},
		{"OAUTHBEARER, initial response a literal", func(c *client) {
			c.Send(`AUTHENTICATE "OAUTHBEARER" ` + literal(oauthbearer("alice", tok)))
		}},
		{"OAUTHBEARER, initial response a synchronising-style literal", func(c *client) {
			ir := oauthbearer("alice", tok)
			c.Send(`AUTHENTICATE "OAUTHBEARER" {` + strconv.Itoa(len(ir)) + "}\r\n" + ir)
		}},
		{"OAUTHBEARER, mechanism a literal, no initial response, response quoted", func(c *client) {
			c.Send("AUTHENTICATE " + literal("OAUTHBEARER"))
			c.Expect(`""`)
			c.Send(`"` + oauthbearer("", tok) + `"`)
		}},
		{"XOAUTH2 in lower case, no initial response, response a literal", func(c *client) {
			c.Send(`Authenticate "xoauth2"`)
			c.Expect(`""`)
			c.Send(literal(xoauth2("alice", tok)))
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := e.dial(t, true)
			c.T = t
			tc.steps(c)
			c.Expect(`OK "Logged in."`)
			name := "script" + strconv.Itoa(i)
			script := "require \"fileinto\";\r\nfileinto \"Spam\";\r\n"
			c.Send(`PUTSCRIPT "` + name + `" ` + literal(script))
			c.Expect(`OK "Putscript completed."`)
			c.Send(`SETACTIVE "` + name + `"`)
			c.Expect("OK ")
			c.Send("LISTSCRIPTS")
			for !strings.HasPrefix(c.Line(), "OK ") {
			}
			c.Send(`GETSCRIPT "` + name + `"`)
			c.Expect("{" + strconv.Itoa(len(script)) + "}")
			got := make([]byte, len(script))
			if _, err := io.ReadFull(c.BR, got); err != nil || string(got) != script {
				t.Errorf("GETSCRIPT gave %q, %v; want %q", got, err, script)
			}
			c.Expect("") // the CRLF after the literal
			c.Expect(`OK "Getscript completed."`)
			// Post-login capabilities are the backend's own.
			c.Send("CAPABILITY")
			if caps := c.capabilities(`OK "Capability completed."`); !slices.Contains(caps, `"OWNER" "alice"`) {
				t.Errorf("CAPABILITY after the login: %q, want the backend's (OWNER)", caps)
			}
			c.Send("LOGOUT")
			c.Expect(`OK "Logout completed."`)
			c.ExpectEOF() // and no BYE: the backend closed after answering LOGOUT
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
	c.Send(`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})) + "\"\r\nPUTSCRIPT \"p\" " + literal("keep;") + "\r\nLISTSCRIPTS\r\nLOGOUT")
	c.Expect(`OK "Logged in."`)
	c.Expect(`OK "Putscript completed."`)
	c.Expect(`"p"`)
	c.Expect(`OK "Listscripts completed."`)
	c.Expect(`OK "Logout completed."`)
	c.ExpectEOF()
}

func TestAuthenticateFailures(t *testing.T) {
	e := newEnv(t)
	expired := e.Issuer.Token(t, demoissuer.Claims{TTL: -time.Hour})
	wrongAud := e.Issuer.Token(t, demoissuer.Claims{Audience: []string{"someone-else"}})
	good := e.Issuer.Token(t, demoissuer.Claims{})
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
			c.T = t
			c.Send(`AUTHENTICATE "` + tc.mech + `" "` + tc.ir + `"`)
			line := c.Expect(`"`)
			if st := errorStatus(t, line); st != "invalid_token" && st != "401" {
				t.Errorf("error status %q, want invalid_token (or 401 for XOAUTH2)", st)
			}
			c.Send(tc.reply)
			c.Expect(`NO "Authentication failed."`)
			// The connection is still usable.
			c.Send("NOOP")
			c.Expect(`OK "NOOP completed."`)
		})
	}
}

// A client that never answers the error challenge gets its NO after the short error-reply
// timeout, not the pre-auth timeout.
func TestSilentClientAfterErrorChallenge(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.ErrorReplyTimeout = config.Duration(200 * time.Millisecond) })
	c, _ := e.dial(t, true)
	c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", "not-a-jwt") + `"`)
	c.Expect(`"`)
	c.Expect(`NO "Authentication failed."`)
	c.Send("NOOP")
	c.Expect("OK ")
	// RFC 7628 §3.2.3: a bare kvsep gets the error challenge, no discovery needed.
	c.Send(`AUTHENTICATE "OAUTHBEARER" "` + b64("\x01") + `"`)
	if st := errorStatus(t, c.Expect(`"`)); st != "invalid_request" {
		t.Errorf("bare kvsep: status %q, want invalid_request", st)
	}
	c.Expect(`NO "Authentication failed."`)
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	c, _ := e.dial(t, true)
	c.Send(`AUTHENTICATE "OAUTHBEARER"`)
	c.Expect(`""`)
	c.Send(`"*"`)
	c.Expect(`NO "Authentication cancelled."`)
	c.Send(`AUTHENTICATE "PLAIN" "` + b64("\x00alice\x00pw") + `"`)
	c.Expect(`NO "Unsupported authentication mechanism."`)
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
		c.Send(s.send)
		c.Expect(s.want)
	}
	c.Send("FROBNICATE")
	c.Expect(`NO "Unknown command"`)
	c.Expect(`BYE "Too many invalid commands."`)
	c.ExpectEOF()
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
		c.Send(line)
		c.Expect(`BYE "`)
		c.ExpectEOF()
	}
	// After the error challenge too.
	c, _ := e.dial(t, true)
	c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", "not-a-jwt") + `"`)
	c.Expect(`"`)
	c.Send("{100000+}")
	c.Expect(`BYE "Literal too large"`)
	c.ExpectEOF()
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
		c.Send(`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})) + `"`)
		c.Expect(`NO (TRYLATER) `)
	})
	t.Run("backend rejects the secret", func(t *testing.T) {
		e := newEnv(t, func(s *Server) { s.Login.Secrets = fetest.SecretMap{"alice": "wrong"} })
		c, _ := e.dial(t, true)
		c.Send(`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})) + `"`)
		c.Expect(`NO (TRYLATER) `)
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
		tok, err := e.Issuer.Mint(demoissuer.Claims{Subject: "alice", Extra: map[string]any{"iss": "http://127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := e.dial(t, true)
		c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("", tok) + `"`)
		c.Expect(`NO (TRYLATER) `)
	})
}

func TestPreauthTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.PreauthTimeout = config.Duration(300 * time.Millisecond) })
	c, _ := e.dial(t, true)
	c.Expect(`BYE "Autologout; authentication took too long."`)
	c.ExpectEOF()
}

// A backend that goes away mid-session without a BYE: the client is told.
func TestBackendLost(t *testing.T) {
	e := newEnv(t)
	c, _ := e.dial(t, true)
	c.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", e.Issuer.Token(t, demoissuer.Claims{})) + `"`)
	c.Expect(`OK "Logged in."`)
	time.Sleep(logoutGrace + 100*time.Millisecond) // the login's OK is no LOGOUT's
	c.Send("X-DROP")
	c.Expect(`BYE (TRYLATER) "Backend connection lost."`)
	c.ExpectEOF()
}

// A drain ends sessions the protocol's way: BYE (TRYLATER), before and after the login.
func TestShutdownSaysBye(t *testing.T) {
	e := newEnv(t)
	pre, _ := e.dial(t, true)
	post, _ := e.dial(t, true)
	post.Send(`AUTHENTICATE "OAUTHBEARER" "` + oauthbearer("alice", e.Issuer.Token(t, demoissuer.Claims{})) + `"`)
	post.Expect(`OK "Logged in."`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- e.Servers[proxy.TLSImplicit].Shutdown(ctx) }()
	for _, c := range []*client{pre, post} {
		c.Expect(`BYE (TRYLATER) "Server shutting down, please reconnect."`)
		c.ExpectEOF()
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
	c.Send("LOGOUT")
	if want := withOwn(`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`); !slices.Equal(greeting, want) {
		t.Fatalf("first greeting %q, want %q", greeting, want)
	}
	e.backend.setCaps([]string{`"IMPLEMENTATION" "FakeSieve 2.0"`, `"SIEVE" "fileinto vacation date"`, `"VERSION" "1.0"`})
	want := []string{`"IMPLEMENTATION" "saslgate"`, `"SASL" "OAUTHBEARER XOAUTH2"`, `"SIEVE" "fileinto vacation date"`, `"VERSION" "1.0"`}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, greeting := e.dial(t, true)
		c.Send("LOGOUT")
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

// FuzzResponseBoundary: how the backend's bytes are chunked never changes where responses
// end, whether a literal is open, or whether the backend's loss is told.
func FuzzResponseBoundary(f *testing.F) {
	f.Add([]byte("\"a\" ACTIVE\r\n{5}\r\nhello\r\nOK\r\n"), 3)
	f.Add([]byte("{3}\nab\nOK \"done\"\r\n"), 1)
	f.Add([]byte("BYE \"Disconnected for inactivity.\"\r\nOK\r\n"), 2)
	f.Add([]byte("OKAY\r\nNO (NONEXISTENT) \"x\"\r\n"), 5)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		var whole, chunked responseBoundary
		whole.Feed(in)
		step = max(1, step%64+1)
		for i := 0; i < len(in); i += step {
			chunked.Feed(in[i:min(i+step, len(in))])
		}
		if whole.Between() != chunked.Between() || whole.lines.Literal() != chunked.lines.Literal() || whole.bye != chunked.bye ||
			whole.okAt.IsZero() != chunked.okAt.IsZero() {
			t.Fatalf("whole: between %v literal %d bye %v ok %v; in chunks of %d: between %v literal %d bye %v ok %v",
				whole.Between(), whole.lines.Literal(), whole.bye, !whole.okAt.IsZero(), step,
				chunked.Between(), chunked.lines.Literal(), chunked.bye, !chunked.okAt.IsZero())
		}
	})
}
