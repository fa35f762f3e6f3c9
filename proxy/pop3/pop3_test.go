package pop3

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
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

// message is the one message in alice's maildrop at the fake backend; its second line starts
// with a dot, which RETR byte-stuffs (RFC 1939 §3).
const message = "Subject: hi\r\n.hidden dot line\r\n\r\nbody\r\n"

// fakePOP3 is a small POP3 server (RFC 1939, CAPA, AUTH PLAIN, Dovecot's XCLIENT) for the
// user alice with the password "backend-secret" and one message.
type fakePOP3 struct {
	addr string

	mu sync.Mutex
	// loginReply, when set, answers every login instead of +OK (an -ERR with a code).
	loginReply string
	xclient    []string // XCLIENT arguments received
	conns      []net.Conn
}

func startFakePOP3(t *testing.T) *fakePOP3 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePOP3{addr: ln.Addr().String()}
	t.Cleanup(func() {
		ln.Close()
		f.closeAll()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			go f.serve(c)
		}
	}()
	return f
}

// closeAll drops every connection, as a backend that goes away does.
func (f *fakePOP3) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fakePOP3) reply() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loginReply
}

func (f *fakePOP3) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	w := func(s string) { fmt.Fprint(c, s+"\r\n") }
	w("+OK [XCLIENT] fake ready.")
	authed := false
	login := func(ok bool) {
		switch {
		case !ok:
			w("-ERR [AUTH] Authentication failed.")
		case f.reply() != "":
			w(f.reply())
		default:
			authed = true
			w("+OK Logged in.")
		}
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		kw, args, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch kw = strings.ToUpper(kw); {
		case kw == "CAPA":
			w("+OK\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n.")
		case kw == "XCLIENT":
			f.mu.Lock()
			f.xclient = append(f.xclient, args)
			f.mu.Unlock()
			w("+OK Updated")
		case kw == "AUTH" && !authed:
			mech, ir, _ := strings.Cut(args, " ")
			if mech != "PLAIN" {
				w("-ERR Unsupported")
				continue
			}
			if ir == "" {
				w("+ ")
				if ir, err = br.ReadString('\n'); err != nil {
					return
				}
			}
			msg, _ := base64.StdEncoding.DecodeString(strings.TrimRight(ir, "\r\n"))
			login(string(msg) == "\x00alice\x00backend-secret")
		case kw == "STAT" && authed:
			w(fmt.Sprintf("+OK 1 %d", len(message)))
		case kw == "LIST" && authed:
			w(fmt.Sprintf("+OK 1 messages\r\n1 %d\r\n.", len(message)))
		case kw == "RETR" && authed && args == "1":
			w(fmt.Sprintf("+OK %d octets\r\n%s.", len(message), strings.ReplaceAll(message, "\r\n.", "\r\n..")))
		case kw == "QUIT":
			w("+OK Logging out.")
			return
		default:
			w("-ERR Unknown command.")
		}
	}
}

// env is one gateway in front of the fake POP3 backend, with a demo issuer.
type env struct {
	*fetest.Gateway[*Server]
	backend *fakePOP3
}

type envOption func(*Server)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{backend: startFakePOP3(t)}
	e.Gateway = fetest.Start(t, fetest.Setup{Protocol: "pop3"}, func(l fetest.Listener) *Server {
		srv := &Server{
			Listener:  l.Config,
			Config:    Config{Backend: backends.Config{Address: e.backend.addr, TLS: "none"}},
			TLSConfig: l.TLS,
			Login:     l.Login,
			Logger:    l.Logger,
		}
		for _, o := range opts {
			o(srv)
		}
		if srv.Login.Router == nil {
			srv.Login.Router = backends.Single("pop3", srv.Config.Backend)
		}
		return srv
	})
	return e
}

// client is a line-level POP3 client for transcript tests.
type client struct{ *fetest.Client }

// dial connects to the implicit-TLS or the STLS listener and reads the greeting.
func (e *env) dial(t *testing.T, implicit bool) *client {
	t.Helper()
	c := &client{e.Dial(t, implicit)}
	c.ExpectLine(greeting)
	return c
}

// multiLine reads the lines of a multi-line response up to its ".".
func (c *client) multiLine() []string {
	c.T.Helper()
	var lines []string
	for {
		line := c.Line()
		if line == "." {
			return lines
		}
		lines = append(lines, line)
	}
}

// capa sends CAPA and returns the capability lines.
func (c *client) capa() []string {
	c.T.Helper()
	c.Send("CAPA")
	c.ExpectLine(capaFollows)
	return c.multiLine()
}

var b64, xoauth2 = fetest.B64, fetest.XOAuth2

func oauthbearer(user, token string) string { return fetest.OAuthBearer(user, token, 995) }

// errorStatus decodes an RFC 7628 error challenge line ("+ <base64 JSON>").
func errorStatus(t *testing.T, line string) string {
	t.Helper()
	return fetest.ErrorStatus(t, strings.TrimPrefix(line, "+ "))
}

// retrieve checks the logged-in session reaches alice's maildrop, byte-stuffing and all, and
// quits.
func (c *client) retrieve() {
	c.T.Helper()
	c.Send("STAT")
	c.ExpectLine(fmt.Sprintf("+OK 1 %d", len(message)))
	c.Send("RETR 1")
	c.Expect("+OK ")
	if got, want := c.multiLine(), strings.Split(strings.TrimSuffix(strings.ReplaceAll(message, "\r\n.", "\r\n.."), "\r\n"), "\r\n"); !slices.Equal(got, want) {
		c.T.Errorf("RETR 1: %q, want %q", got, want)
	}
	c.Send("QUIT")
	c.ExpectLine("+OK Logging out.")
	c.ExpectEOF()
}

func TestGreetingCapaNoopQuit(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	if got, want := c.capa(), []string{"SASL OAUTHBEARER XOAUTH2", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION saslgate"}; !slices.Equal(got, want) {
		t.Errorf("CAPA over implicit TLS: %q, want %q", got, want)
	}
	c.Send("noop")
	c.ExpectLine("+OK")
	c.Send("QUIT")
	c.ExpectLine("+OK Bye")
	c.ExpectEOF()

	c = e.dial(t, false)
	if got, want := c.capa(), []string{"STLS", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION saslgate"}; !slices.Equal(got, want) {
		t.Errorf("CAPA before STLS: %q, want %q", got, want)
	}
}

func TestCapaWithTokenAsPassword(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsPassword = true })
	c := e.dial(t, false)
	if caps := c.capa(); slices.Contains(caps, "USER") {
		t.Errorf("CAPA before STLS lists USER: %q", caps)
	}
	c.Send("STLS")
	c.Expect("+OK ")
	c.StartTLS(e.Cert.ClientTLS())
	if got, want := c.capa(), []string{"SASL OAUTHBEARER XOAUTH2", "USER", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION saslgate"}; !slices.Equal(got, want) {
		t.Errorf("CAPA after STLS: %q, want %q", got, want)
	}
}

func TestAuthSuccess(t *testing.T) {
	e := newEnv(t)
	tok := e.Issuer.Token(t, demoissuer.Claims{})
	for _, tc := range []struct {
		name  string
		steps func(c *client)
	}{
		{"OAUTHBEARER with initial response", func(c *client) {
			c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", tok))
		}},
		{"OAUTHBEARER after the empty challenge, no authzid", func(c *client) {
			c.Send("AUTH OAUTHBEARER")
			c.ExpectLine("+ ")
			c.Send(oauthbearer("", tok))
		}},
		{"XOAUTH2 with initial response, lower case", func(c *client) {
			c.Send("auth xoauth2 " + xoauth2("alice", tok))
		}},
		{"XOAUTH2 after the empty challenge", func(c *client) {
			c.Send("AUTH XOAUTH2")
			c.ExpectLine("+ ")
			c.Send(xoauth2("alice", tok))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.T = t
			tc.steps(c)
			c.ExpectLine("+OK Logged in.")
			c.retrieve()
		})
	}
}

// Commands pipelined behind AUTH reach the backend, in order.
func TestPipelinedAfterAuth(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})) + "\r\nSTAT\r\nQUIT")
	c.ExpectLine("+OK Logged in.")
	c.ExpectLine(fmt.Sprintf("+OK 1 %d", len(message)))
	c.ExpectLine("+OK Logging out.")
	c.ExpectEOF()
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	expired := e.Issuer.Token(t, demoissuer.Claims{TTL: -time.Hour})
	wrongAud := e.Issuer.Token(t, demoissuer.Claims{Audience: []string{"someone-else"}})
	good := e.Issuer.Token(t, demoissuer.Claims{})
	for _, tc := range []struct {
		name, mech, ir, reply string
	}{
		{"expired, AQ== reply", "OAUTHBEARER", oauthbearer("", expired), "AQ=="},
		{"wrong audience, empty reply", "OAUTHBEARER", oauthbearer("", wrongAud), ""},
		{"garbage token, initial response sent again", "OAUTHBEARER", oauthbearer("", "abc.def.ghi"), oauthbearer("", "abc.def.ghi")},
		{"authzid is another user", "OAUTHBEARER", oauthbearer("bob", good), "AQ=="},
		{"reply that is not base64", "OAUTHBEARER", oauthbearer("", expired), "!!"},
		{"XOAUTH2 expired", "XOAUTH2", xoauth2("alice", expired), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.T = t
			c.Send("AUTH " + tc.mech + " " + tc.ir)
			if st := errorStatus(t, c.Expect("+ ")); st != "invalid_token" && st != "401" {
				t.Errorf("error status %q, want invalid_token (or 401 for XOAUTH2)", st)
			}
			c.Send(tc.reply)
			c.ExpectLine("-ERR [AUTH] Authentication failed")
			// RFC 5034 §4: as if the AUTH had not been issued.
			c.Send("NOOP")
			c.ExpectLine("+OK")
		})
	}
}

// A client that never answers the error challenge gets its -ERR after the short error-reply
// timeout, not the pre-auth timeout.
func TestSilentClientAfterErrorChallenge(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.ErrorReplyTimeout = config.Duration(200 * time.Millisecond) })
	c := e.dial(t, true)
	c.Send("AUTH OAUTHBEARER " + oauthbearer("", "not-a-jwt"))
	c.Expect("+ ")
	c.ExpectLine("-ERR [AUTH] Authentication failed")
	c.Send("NOOP")
	c.ExpectLine("+OK")
	// RFC 7628 §3.2.3: a bare kvsep gets the error challenge.
	c.Send("AUTH OAUTHBEARER " + b64("\x01"))
	if st := errorStatus(t, c.Expect("+ ")); st != "invalid_request" {
		t.Errorf("bare kvsep: status %q, want invalid_request", st)
	}
	c.ExpectLine("-ERR [AUTH] Authentication failed")
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	for _, step := range []struct{ send, want string }{
		// Answered, not counted.
		{"AUTH OAUTHBEARER", "+ "},
		{"*", "-ERR AUTH cancelled"},
		{"AUTH PLAIN " + b64("\x00alice\x00pw"), "-ERR Unsupported authentication mechanism"},
		{"USER alice", "-ERR USER and PASS are disabled"},
		{"PASS secret", "-ERR USER and PASS are disabled"},
		{"APOP alice 0123456789abcdef", "-ERR APOP is not available"},
		// Counted: nine of them, the tenth ends the connection.
		{"AUTH OAUTHBEARER !!notbase64", "-ERR Invalid base64 in initial response"},
		{"AUTH OAUTHBEARER " + b64("garbage without kvsep"), "-ERR Malformed OAUTHBEARER message"},
		{"AUTH", "-ERR AUTH takes a mechanism"},
		{"AUTH XOAUTH2 a b", "-ERR AUTH takes a mechanism"},
		{"STAT", "-ERR Authenticate first"},
		{"CAPA now", "-ERR CAPA takes no arguments"},
		{"STLS", "-ERR TLS is already active"},
		{strings.Repeat("x", DefaultMaxLineLength+10), "-ERR Line too long"},
		{"", "-ERR Unknown command"},
		{"NOOP", "+OK"},
		{"FROBNICATE", "-ERR Too many invalid commands"},
	} {
		c.Send(step.send)
		c.Expect(step.want)
	}
	c.ExpectEOF()
}

// The bad-command bound is configurable.
func TestMaxBadCommands(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.MaxBadCommands = 2 })
	c := e.dial(t, true)
	c.Send("RETR 1")
	c.ExpectLine("-ERR Authenticate first")
	c.Send("RETR 1")
	c.ExpectLine("-ERR Too many invalid commands")
	c.ExpectEOF()
}

func TestSTLS(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsPassword = true })
	tok := e.Issuer.Token(t, demoissuer.Claims{})
	c := e.dial(t, false)
	// RFC 2595 §4: no AUTH, USER or PASS before STLS.
	for _, cmd := range []string{"AUTH OAUTHBEARER " + oauthbearer("", tok), "USER alice", "PASS " + tok} {
		c.Send(cmd)
		c.ExpectLine("-ERR Use STLS first")
	}
	c.Send("STLS now")
	c.Expect("-ERR ")
	// A command injected behind STLS, in the same packet, is discarded.
	c.Send("STLS\r\nCAPA")
	c.ExpectLine("+OK Begin TLS negotiation now")
	c.StartTLS(e.Cert.ClientTLS())
	c.Send("NOOP")
	c.ExpectLine("+OK") // had CAPA been executed, its reply would come first
	c.Send("STLS")
	c.ExpectLine("-ERR TLS is already active")
	c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", tok))
	c.ExpectLine("+OK Logged in.")
	c.retrieve()
}

func TestSTLSOnImplicitListener(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.Send("STLS")
	c.ExpectLine("-ERR TLS is already active")
}

func TestTokenAsPassword(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsPassword = true })
	c := e.dial(t, true)
	c.Send("PASS whatever")
	c.ExpectLine("-ERR Send USER first")
	c.Send("USER alice")
	c.Expect("+OK ")
	c.Send("PASS not-a-token")
	c.ExpectLine("-ERR [AUTH] Authentication failed")
	// PASS must follow USER at once (RFC 1939 §7).
	c.Send("USER alice")
	c.Expect("+OK ")
	c.Send("NOOP")
	c.ExpectLine("+OK")
	c.Send("PASS " + e.Issuer.Token(t, demoissuer.Claims{}))
	c.ExpectLine("-ERR Send USER first")
	c.Send("USER bob")
	c.Expect("+OK ")
	c.Send("PASS " + e.Issuer.Token(t, demoissuer.Claims{}))
	c.ExpectLine("-ERR [AUTH] Authentication failed") // the token is alice's
	c.Send("USER alice")
	c.Expect("+OK ")
	c.Send("PASS " + e.Issuer.Token(t, demoissuer.Claims{}))
	c.ExpectLine("+OK Logged in.")
	c.retrieve()
}

// Trouble behind the token check is temporary: -ERR [SYS/TEMP] (RFC 3206 §4).
func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  envOption
		tok  func(e *env) string
	}{
		{"backend down", func(s *Server) { s.Config.Backend.Address = "127.0.0.1:1" }, nil},
		{"backend rejects the secret", func(s *Server) { s.Login.Secrets = fetest.SecretMap{"alice": "wrong"} }, nil},
		{"user has no backend secret", func(s *Server) { s.Login.Secrets = fetest.SecretMap{} }, nil},
		{"IdP down", func(s *Server) {
			v, err := introspect.New(context.Background(), introspect.Config{Issuers: []introspect.IssuerConfig{{
				Issuer: "http://127.0.0.1:1", Mode: "jwt", Audience: []string{"saslgate"}, UsernameClaim: "sub",
			}}})
			if err != nil {
				t.Fatal(err)
			}
			s.Login.Validator = v
		}, func(e *env) string {
			tok, err := e.Issuer.Mint(demoissuer.Claims{Subject: "alice", Extra: map[string]any{"iss": "http://127.0.0.1:1"}})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opt)
			tok := e.Issuer.Token(t, demoissuer.Claims{})
			if tc.tok != nil {
				tok = tc.tok(e)
			}
			c := e.dial(t, true)
			c.Send("AUTH XOAUTH2 " + xoauth2("alice", tok))
			c.Expect("-ERR [SYS/TEMP] ")
			c.Send("NOOP")
			c.ExpectLine("+OK")
		})
	}
	t.Run("maildrop locked", func(t *testing.T) {
		e := newEnv(t)
		e.backend.mu.Lock()
		e.backend.loginReply = "-ERR [IN-USE] Mailbox is locked"
		e.backend.mu.Unlock()
		c := e.dial(t, true)
		c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
		c.ExpectLine("-ERR [SYS/TEMP] Mailbox temporarily unavailable")
	})
}

// With forward_client_address, the backend learns the client's address in XCLIENT.
func TestForwardClientAddress(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.Backend.ForwardClientAddress = true })
	c := e.dial(t, true)
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	c.ExpectLine("+OK Logged in.")
	local := c.NC.LocalAddr().(*net.TCPAddr)
	e.backend.mu.Lock()
	defer e.backend.mu.Unlock()
	if want := fmt.Sprintf("ADDR=127.0.0.1 PORT=%d", local.Port); !slices.Equal(e.backend.xclient, []string{want}) {
		t.Errorf("XCLIENT %q, want %q", e.backend.xclient, want)
	}
}

func TestPreauthTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.PreauthTimeout = config.Duration(300 * time.Millisecond) })
	for _, implicit := range []bool{true, false} {
		c := e.dial(t, implicit)
		c.ExpectLine(replyTimeout)
		c.ExpectEOF()
	}
}

// DESIGN.md: a backend lost mid-session closes the client's connection, with no line of
// saslgate's in the middle of the backend's responses.
func TestBackendLost(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	c.ExpectLine("+OK Logged in.")
	c.Send("STAT")
	c.Expect("+OK 1 ")
	e.backend.closeAll()
	c.ExpectEOF()
}

// A drain ends a session not yet logged in with a [SYS/TEMP] line, and closes a spliced one.
func TestShutdown(t *testing.T) {
	e := newEnv(t)
	pre := e.dial(t, true)
	in := e.dial(t, true)
	in.Send("AUTH XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	in.ExpectLine("+OK Logged in.")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Servers[proxy.TLSImplicit].Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	pre.ExpectLine(replyShutdown)
	pre.ExpectEOF()
	in.ExpectEOF()
}

// recordingObserver records the events of a listener.
type recordingObserver struct {
	proxy.NopObserver
	mu     sync.Mutex
	events []string
	up     int64
	down   int64
	ended  chan struct{}
}

func (o *recordingObserver) add(ev string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
}

func (o *recordingObserver) SessionStarted()       { o.add("started") }
func (o *recordingObserver) SessionAuthenticated() { o.add("authenticated") }
func (o *recordingObserver) Authenticated(mech, result string) {
	o.add("auth " + mech + " " + result)
}
func (o *recordingObserver) BackendLogin(_ time.Duration, result string) {
	o.add("backend login " + result)
}
func (o *recordingObserver) Relayed(up, down int64) {
	o.mu.Lock()
	o.up, o.down = up, down
	o.mu.Unlock()
}
func (o *recordingObserver) SessionEnded(authed bool) {
	o.add(fmt.Sprintf("ended %v", authed))
	close(o.ended)
}

// One session's events reach the Observer in order, and its bytes once it ends.
func TestObserver(t *testing.T) {
	obs := &recordingObserver{ended: make(chan struct{})}
	e := newEnv(t, func(s *Server) {
		if s.Listener.TLS == proxy.TLSImplicit {
			s.Observer = obs
		}
	})
	c := e.dial(t, true)
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	c.ExpectLine("+OK Logged in.")
	c.retrieve()
	c.NC.Close() // else the splice gives the client's direction its half-close grace
	select {
	case <-obs.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := []string{"started", "backend login ", "auth XOAUTH2 success", "authenticated", "ended true"}
	if !slices.Equal(obs.events, want) {
		t.Errorf("events %q, want %q", obs.events, want)
	}
	if obs.up != int64(len("STAT\r\nRETR 1\r\nQUIT\r\n")) || obs.down < int64(len(message)) {
		t.Errorf("relayed up %d, down %d; want the three commands up and the message down", obs.up, obs.down)
	}
}

// The limiter's delay holds back the answer: the front end runs Login.Wait.
func TestAuthDelayHoldsAnswer(t *testing.T) {
	const delay = 300 * time.Millisecond
	e := newEnv(t, func(s *Server) { s.Login.Limiter = fetest.FixedDelay(delay) })
	c := e.dial(t, true)
	sent := time.Now()
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", "not-a-token") + "\r\n")
	c.Expect("+ ")
	c.ExpectLine("-ERR [AUTH] Authentication failed")
	if d := time.Since(sent); d < delay {
		t.Errorf("-ERR after %v, want at least %v", d, delay)
	}
}

func TestServeRequires(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert := fetest.NewCert(t)
	for _, s := range []*Server{
		{Login: &proxy.Login{Router: backends.Single("pop3", backends.Config{Address: "127.0.0.1:110", TLS: "none"})}},
		{TLSConfig: cert.ServerTLS(), Login: &proxy.Login{}},
		{TLSConfig: cert.ServerTLS()},
	} {
		if err := s.Serve(ln); err == nil || errors.Is(err, ErrServerClosed) || !strings.HasPrefix(err.Error(), "pop3: Server.") {
			t.Errorf("Serve: %v, want a missing-field error", err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	be := backends.Config{Address: "127.0.0.1:110", TLS: "none"}
	for _, tc := range []struct {
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{Config{Backend: be}, nil},
		{Config{Pool: "dovecot"}, nil},
		{Config{Pool: "dovecot", Backend: be}, []string{"pop3", "not both"}},
		{Config{}, []string{"pop3", "one is required"}},
		{Config{Backend: backends.Config{Address: "x"}}, []string{"pop3.backend: "}},
		{Config{Backend: be, PreauthTimeout: -1, ErrorReplyTimeout: -1, MaxLineLength: 100, MaxBadCommands: -1}, []string{
			"pop3.preauth_timeout", "pop3.error_reply_timeout", "pop3.max_line_length 100", "pop3.max_bad_commands",
		}},
	} {
		err := tc.cfg.Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%+v: %v, want valid", tc.cfg, err)
			}
			continue
		}
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %v, want %q", tc.cfg, err, w)
			}
		}
	}
	if pool, be2 := (Config{Pool: "p", Backend: be}).Backends(); pool != "p" || be2 != be {
		t.Errorf("Backends() = %q, %+v", pool, be2)
	}
}

func TestProtocol(t *testing.T) {
	p := Protocol
	if p.Name != "pop3" || p.ImplicitPort != 995 || p.StartTLSPort != 110 || p.Autoconfig != proxy.AutoconfigIncoming {
		t.Errorf("Protocol = %+v", p)
	}
	sec := p.NewSection().(*Config)
	sec.AllowTokenAsPassword = true
	l := proxy.ListenerConfig{Name: "pop3s", Protocol: "pop3", TLS: proxy.TLSImplicit}
	s := p.NewServer(proxy.ServerDeps{Listener: l, Section: sec}).(*Server)
	if s.Listener.Name != l.Name || !s.Config.AllowTokenAsPassword {
		t.Errorf("NewServer: %+v", s)
	}
}
