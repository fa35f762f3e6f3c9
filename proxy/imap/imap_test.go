package imap

import (
	"context"
	"log/slog"
	"net"
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
	"github.com/saslgate/saslgate/proxy/internal/fetest"
)

// env is one gateway in front of go-imap's in-memory server, with a demo issuer.
type env struct {
	*fetest.Gateway[*Server]
}

type envOption func(*Server)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
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

	g := fetest.Start(t, fetest.Setup{Protocol: "imap"}, func(l fetest.Listener) *Server {
		srv := &Server{
			Listener:  l.Config,
			Config:    Config{Backend: backends.Config{Address: bln.Addr().String(), TLS: "none"}, ErrorReplyTimeout: 0},
			TLSConfig: l.TLS,
			Login:     l.Login,
			Logger:    l.Logger,
		}
		for _, o := range opts {
			o(srv)
		}
		if srv.Login.Router == nil {
			srv.Login.Router = backends.Single("imap", srv.Config.Backend)
		}
		return srv
	})
	return &env{g}
}

// client is a line-level IMAP client for transcript tests.
type client = fetest.Client

// dial connects to the implicit-TLS or the STARTTLS listener and reads the greeting.
func (e *env) dial(t *testing.T, implicit bool) *client {
	t.Helper()
	c := e.Dial(t, implicit)
	c.Expect("* OK [CAPABILITY ")
	return c
}

var b64, xoauth2 = fetest.B64, fetest.XOAuth2

func oauthbearer(user, token string) string { return fetest.OAuthBearer(user, token, 993) }

// errorStatus decodes an RFC 7628 error challenge line ("+ <base64 JSON>").
func errorStatus(t *testing.T, line string) string {
	t.Helper()
	return fetest.ErrorStatus(t, strings.TrimPrefix(line, "+ "))
}

func TestCapabilities(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.Send("a CAPABILITY")
	c.Expect("* CAPABILITY IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2 LOGINDISABLED")
	c.Expect("a OK ")
	c.Send("b NOOP")
	c.Expect("b OK ")
	c.Send(`c ID ("name" "test" "version" NIL)`)
	c.Expect(`* ID ("name" "saslgate")`)
	c.Expect("c OK ")
	c.Send("d LOGOUT")
	c.Expect("* BYE ")
	c.Expect("d OK ")
	c.ExpectEOF()
}

func TestAuthenticateSuccess(t *testing.T) {
	e := newEnv(t)
	tok := e.Issuer.Token(t, demoissuer.Claims{})
	cases := []struct {
		name  string
		steps func(c *client)
	}{
		{"OAUTHBEARER with SASL-IR", func(c *client) {
			c.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("alice", tok))
		}},
		{"OAUTHBEARER without SASL-IR, no authzid", func(c *client) {
			c.Send("a AUTHENTICATE OAUTHBEARER")
			c.Expect("+ ")
			c.Send(oauthbearer("", tok))
		}},
		{"XOAUTH2 with SASL-IR", func(c *client) {
			c.Send("a authenticate xoauth2 " + xoauth2("alice", tok))
		}},
		{"XOAUTH2 without SASL-IR", func(c *client) {
			c.Send("a AUTHENTICATE XOAUTH2")
			c.Expect("+ ")
			c.Send(xoauth2("alice", tok))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.T = t
			tc.steps(c)
			c.Expect("a OK [CAPABILITY IMAP4rev1")
			c.Send("b SELECT INBOX")
			for !strings.HasPrefix(c.Expect(""), "b OK") {
			}
			c.Send("c LOGOUT")
			c.Expect("* BYE")
			c.Expect("c OK")
			c.ExpectEOF()
		})
	}
}

// Commands pipelined behind AUTHENTICATE reach the backend, in order.
func TestPipelinedAfterAuthenticate(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.Send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})) + "\r\nb NOOP\r\nc LOGOUT")
	c.Expect("a OK ")
	c.Expect("b OK ")
	c.Expect("* BYE")
	c.Expect("c OK")
	c.ExpectEOF()
}

func TestAuthenticateFailures(t *testing.T) {
	e := newEnv(t)
	expired := e.Issuer.Token(t, demoissuer.Claims{TTL: -time.Hour})
	wrongAud := e.Issuer.Token(t, demoissuer.Claims{Audience: []string{"someone-else"}})
	crlfUser := e.Issuer.Token(t, demoissuer.Claims{Extra: map[string]any{"sub": "alice\r\nx"}})
	good := e.Issuer.Token(t, demoissuer.Claims{})
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
			c.T = t
			c.Send("a AUTHENTICATE " + map[bool]string{true: "XOAUTH2", false: "OAUTHBEARER"}[strings.HasPrefix(tc.name, "XOAUTH2")] + " " + tc.ir)
			line := c.Expect("+ ")
			if st := errorStatus(t, line); st != "invalid_token" && st != "401" {
				t.Errorf("error status %q, want invalid_token (or 401 for XOAUTH2)", st)
			}
			c.Send(tc.reply)
			c.Expect("a NO [AUTHENTICATIONFAILED] ")
			// The connection is still usable.
			c.Send("b NOOP")
			c.Expect("b OK")
		})
	}
}

// A client that never answers the error challenge gets its NO after the
// short error-reply timeout, not the pre-auth timeout.
func TestSilentClientAfterErrorChallenge(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.ErrorReplyTimeout = config.Duration(200 * time.Millisecond) })
	c := e.dial(t, true)
	c.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", "not-a-jwt"))
	c.Expect("+ ")
	c.Expect("a NO [AUTHENTICATIONFAILED]")
	c.Send("b NOOP")
	c.Expect("b OK")
	// RFC 7628 §3.2.3: a bare kvsep gets the error challenge, no discovery needed.
	c.Send("c AUTHENTICATE OAUTHBEARER " + b64("\x01"))
	if st := errorStatus(t, c.Expect("+ ")); st != "invalid_request" {
		t.Errorf("bare kvsep: status %q, want invalid_request", st)
	}
	c.Expect("c NO [AUTHENTICATIONFAILED]")
}

func TestProtocolErrors(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, true)
	c.Send("a AUTHENTICATE OAUTHBEARER")
	c.Expect("+ ")
	c.Send("*")
	c.Expect("a BAD AUTHENTICATE cancelled")
	c.Send("b AUTHENTICATE OAUTHBEARER !!notbase64")
	c.Expect("b BAD ")
	c.Send("c AUTHENTICATE PLAIN " + b64("\x00alice\x00pw"))
	c.Expect("c NO ")
	c.Send("d AUTHENTICATE OAUTHBEARER " + b64("garbage without kvsep"))
	c.Expect("d BAD ")
	c.Send("e SELECT INBOX")
	c.Expect("e BAD ")
	c.Send("f LOGIN alice secret")
	c.Expect("f NO ")
	c.Send("g " + strings.Repeat("x", DefaultMaxLineLength+10))
	c.Expect("g BAD Line too long")
	c.Send("h LOGIN {100000}")
	c.Expect("h BAD Literal too large")
	c.Send("i NOOP")
	c.Expect("i OK")
	c.Send("+tag NOOP")
	c.Expect("* BAD Invalid tag")
	// Six BADs so far; the tenth ends the connection.
	for i := 0; i < DefaultMaxBadCommands-6; i++ {
		c.Send("z FROBNICATE")
		c.Expect("z BAD ")
	}
	c.Expect("* BYE Too many invalid commands")
	c.ExpectEOF()
}

func TestSTARTTLS(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, false)
	c.Send("a CAPABILITY")
	c.Expect("* CAPABILITY IMAP4rev1 SASL-IR ID STARTTLS LOGINDISABLED")
	c.Expect("a OK")
	c.Send("b AUTHENTICATE OAUTHBEARER " + oauthbearer("", e.Issuer.Token(t, demoissuer.Claims{})))
	c.Expect("b NO [PRIVACYREQUIRED] ")
	c.Send("c LOGIN alice x")
	c.Expect("c NO [PRIVACYREQUIRED] ")
	// STARTTLS, NOOP and LOGOUT take no arguments (RFC 9051 §6.1, §6.2.1); the connection
	// stays in plaintext.
	for _, cmd := range []string{"d STARTTLS foo", "e NOOP bar", "f LOGOUT now"} {
		c.Send(cmd)
		c.Expect(cmd[:2] + "BAD ")
	}
	// A command injected behind STARTTLS, in the same packet, is discarded.
	c.Send("s STARTTLS\r\nx CAPABILITY")
	c.Expect("s OK ")
	c.StartTLS(e.Cert.ClientTLS())
	c.Send("y CAPABILITY")
	c.Expect("* CAPABILITY IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2")
	c.Expect("y OK") // had x been executed, its reply would come first
	c.Send("z STARTTLS")
	c.Expect("z BAD ")
	c.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	c.Expect("a OK ")
}

func TestLoginWithToken(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsLoginPassword = true })
	c := e.dial(t, true)
	c.Send("a CAPABILITY")
	if line := c.Expect("* CAPABILITY "); line != "* CAPABILITY IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2" {
		t.Errorf("with token LOGIN allowed, got %q, want no LOGINDISABLED", line)
	}
	c.Expect("a OK")
}

func TestLoginWithTokenAccepted(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.AllowTokenAsLoginPassword = true })
	c := e.dial(t, true)
	c.Send(`a LOGIN alice "not-a-token"`)
	c.Expect("a NO [AUTHENTICATIONFAILED]")
	tok := e.Issuer.Token(t, demoissuer.Claims{})
	c.Send("b LOGIN alice {" + strconv.Itoa(len(tok)) + "}")
	c.Expect("+ ")
	c.Send(tok)
	c.Expect("b OK ")
}

// Trouble behind the token check is temporary: NO [UNAVAILABLE].
func TestUnavailable(t *testing.T) {
	t.Run("backend down", func(t *testing.T) {
		e := newEnv(t, func(s *Server) { s.Config.Backend.Address = "127.0.0.1:1" })
		c := e.dial(t, true)
		c.Send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
		c.Expect("a NO [UNAVAILABLE] ")
	})
	t.Run("backend rejects secret", func(t *testing.T) {
		e := newEnv(t, func(s *Server) { s.Login.Secrets = fetest.SecretMap{"alice": "wrong"} })
		c := e.dial(t, true)
		c.Send("a AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
		c.Expect("a NO [UNAVAILABLE] ")
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
		c.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", tok))
		c.Expect("a NO [UNAVAILABLE] ")
	})
}

// mintFor mints a token naming another issuer, routed to that issuer's config.
func mintFor(e *env, iss string) (string, error) {
	return e.Issuer.Mint(demoissuer.Claims{Subject: "alice", Extra: map[string]any{"iss": iss}})
}

func TestPreauthTimeout(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Config.PreauthTimeout = config.Duration(300 * time.Millisecond) })
	c := e.dial(t, true)
	c.Expect("* BYE ")
	c.ExpectEOF()
}

// go-imap's own client, with go-sasl's OAUTHBEARER client, works end to end.
func TestIMAPClient(t *testing.T) {
	e := newEnv(t)
	cl, err := imapclient.DialTLS(e.ImplAddr, &imapclient.Options{TLSConfig: e.Cert.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tok := e.Issuer.Token(t, demoissuer.Claims{})
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
	bad, err := imapclient.DialTLS(e.ImplAddr, &imapclient.Options{TLSConfig: e.Cert.ClientTLS()})
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
	c.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", "not-a-token"))
	c.Expect("+ ")
	c.Send("AQ==")
	c.Expect("a NO [AUTHENTICATIONFAILED] ")
	c.Send("b LOGIN alice whatever")
	c.Expect("b NO ")
	c.Send("c AUTHENTICATE XOAUTH2 " + xoauth2("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	c.Expect("c OK ")
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if want := []string{"127.0.0.1 "}; !slices.Equal(rl.failed, want) {
		t.Errorf("failures reported %q, want %q", rl.failed, want)
	}
	if want := []string{"127.0.0.1 ", "127.0.0.1 ", "127.0.0.1 alice"}; !slices.Equal(rl.delays, want) {
		t.Errorf("delays asked %q, want %q", rl.delays, want)
	}
}

// The limiter's delay is served, not just asked for: the tagged NO comes no sooner than
// the delay after the client's last line. The delay runs when the command arrives, before
// any challenge, so the AUTHENTICATE rows send their reply to the error challenge along
// with the command.
func TestAuthDelayHoldsAnswer(t *testing.T) {
	const delay = 300 * time.Millisecond
	e := newEnv(t, func(s *Server) {
		s.Login.Limiter = fetest.FixedDelay(delay)
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
			c.Send(tc.lines)
			for _, r := range tc.replies {
				c.Expect(r)
			}
			if d := time.Since(sent); d < delay || d > 5*time.Second {
				t.Errorf("tagged NO %v after the client's last line, want between %v and 5s", d, delay)
			}
		})
	}
}
