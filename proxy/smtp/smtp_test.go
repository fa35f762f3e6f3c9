package smtp

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
	"github.com/saslgate/saslgate/tls/certs"
)

// env is one gateway (an implicit-TLS and a STARTTLS listener) in front of a sink, with a
// demo issuer.
type env struct {
	*fetest.Gateway[*Server]
	sink *sink
}

type envOption func(*Server)

func newEnv(t *testing.T, k *sink, opts ...envOption) *env {
	t.Helper()
	if k == nil {
		k = newSink(t, nil)
	}
	e := &env{sink: k}
	e.Gateway = fetest.Start(t, fetest.Setup{Protocol: "smtp", Scopes: map[string][]string{"smtp": {"mail.send"}}}, func(l fetest.Listener) *Server {
		srv := &Server{
			Listener: l.Config,
			Config: Config{
				Backend:  backends.Config{Address: k.addr, TLS: "none", Hostname: "gw.example", Timeout: config.Duration(5 * time.Second)},
				Hostname: "mx.example",
			},
			TLSConfig: l.TLS,
			Login:     l.Login,
			Logger:    l.Logger,
		}
		for _, o := range opts {
			o(srv)
		}
		if srv.Login.Router == nil {
			srv.Login.Router = backends.Single("smtp", srv.Config.Backend)
		}
		return srv
	})
	return e
}

// token mints a token for alice, with the scope mail.send unless c names another.
func (e *env) token(t *testing.T, c demoissuer.Claims) string {
	t.Helper()
	if c.Scope == "" {
		c.Scope = "openid mail.send"
	}
	return e.Issuer.Token(t, c)
}

// client is a line-level SMTP client for transcript tests.
type client struct{ *fetest.Client }

// dial connects and reads the greeting; on the STARTTLS listener it stays in plain text.
func (e *env) dial(t *testing.T, implicit bool) *client {
	t.Helper()
	c := &client{e.Dial(t, implicit)}
	c.NC.SetDeadline(time.Now().Add(20 * time.Second))
	c.Expect("220 mx.example ESMTP")
	return c
}

// login dials the implicit-TLS listener and authenticates alice with XOAUTH2.
func (e *env) login(t *testing.T) *client {
	t.Helper()
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
	c.Expect("235 2.0.0 ")
	return c
}

// Expect reads one reply, all its lines, and checks that its last line starts with prefix;
// it returns the lines.
func (c *client) Expect(prefix string) []string {
	c.T.Helper()
	var lines []string
	for {
		line := c.Line()
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		c.T.Fatalf("got %q, want prefix %q", last, prefix)
	}
	return lines
}

func (c *client) startTLS(e *env) {
	c.T.Helper()
	c.Send("STARTTLS")
	c.Expect("220 2.0.0 ")
	c.StartTLS(e.Cert.ClientTLS())
}

var b64, xoauth2 = fetest.B64, fetest.XOAuth2

func oauthbearer(user, token string) string { return fetest.OAuthBearer(user, token, 465) }

// errorStatus decodes an RFC 7628 error challenge line ("334 <base64 JSON>").
func errorStatus(t *testing.T, line string) string {
	t.Helper()
	return fetest.ErrorStatus(t, strings.TrimPrefix(line, "334 "))
}

func (e *env) nextMessage(t *testing.T) message {
	t.Helper()
	select {
	case m := <-e.sink.got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("the sink received no message")
		return message{}
	}
}

func (e *env) expectNoMessage(t *testing.T) {
	t.Helper()
	select {
	case m := <-e.sink.got:
		t.Fatalf("the sink received a message: %+v", m)
	default:
	}
}

func TestEHLO(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	got := c.Expect("250 ")
	for _, want := range []string{"250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250-CHUNKING",
		"250-AUTH OAUTHBEARER XOAUTH2", "250-SMTPUTF8", "250-DSN", "250 SIZE 52428800"} {
		if !slices.Contains(got, want) {
			t.Errorf("EHLO on implicit TLS lacks %q: %q", want, got)
		}
	}
	for _, line := range got {
		if strings.Contains(line, "STARTTLS") || strings.Contains(line, "REQUIRETLS") {
			t.Errorf("EHLO on implicit TLS announces %q (REQUIRETLS needs a TLS backend)", line)
		}
	}

	c = e.dial(t, false)
	c.Send("EHLO client.example")
	got = c.Expect("250 ")
	if !slices.Contains(got, "250-STARTTLS") || slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "AUTH") }) {
		t.Errorf("EHLO before STARTTLS: %q, want STARTTLS and no AUTH", got)
	}
	c.startTLS(e)
	c.Send("EHLO client.example")
	got = c.Expect("250 ")
	if slices.Contains(got, "250-STARTTLS") || !slices.Contains(got, "250-AUTH OAUTHBEARER XOAUTH2") {
		t.Errorf("EHLO after STARTTLS: %q, want AUTH and no STARTTLS", got)
	}
}

// Extensions follow the backend: without DSN, SMTPUTF8 and SIZE there, none is announced, and
// a TLS backend offering REQUIRETLS makes saslgate offer it.
func TestEHLOFollowsBackend(t *testing.T) {
	k := newSink(t, func(s *gosmtp.Server) {
		s.EnableDSN, s.EnableSMTPUTF8, s.MaxMessageBytes = false, false, 0
	})
	e := newEnv(t, k)
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	got := c.Expect("250 SIZE")
	for _, line := range got {
		if strings.Contains(line, "DSN") || strings.Contains(line, "SMTPUTF8") || line == "250 SIZE 52428800" {
			t.Errorf("EHLO announces %q, which the backend does not offer", line)
		}
	}
	c.Send("MAIL FROM:<alice@example.com> RET=HDRS")
	c.Expect("504 5.5.4 ")

	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := t.TempDir() + "/ca.pem"
	if err := writeFile(caFile, certPEM); err != nil {
		t.Fatal(err)
	}
	k = newSink(t, func(s *gosmtp.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.AllowInsecureAuth = false
		s.EnableREQUIRETLS = true
	})
	e = newEnv(t, k, func(s *Server) {
		s.Config.Backend.TLS, s.Config.Backend.CAFile = "starttls", caFile
	})
	c = e.login(t)
	c.Send("EHLO client.example")
	if got := c.Expect("250 "); !slices.Contains(got, "250-REQUIRETLS") {
		t.Errorf("EHLO lacks REQUIRETLS of a STARTTLS backend: %q", got)
	}
	c.Send("MAIL FROM:<alice@example.com> REQUIRETLS")
	c.Expect("250 ")
	c.Send("RCPT TO:<bob@example.com>")
	c.Expect("250 ")
	c.Send("DATA")
	c.Expect("354 ")
	c.Send("Subject: t\r\n\r\nx\r\n.")
	c.Expect("250 2.0.0 Ok: queued as 4XyZ")
	if m := e.nextMessage(t); !m.Mail.RequireTLS {
		t.Errorf("REQUIRETLS not relayed: %+v", m.Mail)
	}
}

func TestAuthSuccess(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.token(t, demoissuer.Claims{})
	cases := []struct {
		name  string
		steps func(c *client)
	}{
		{"OAUTHBEARER with initial response", func(c *client) {
			c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", tok))
		}},
		{"OAUTHBEARER without initial response, no authzid", func(c *client) {
			c.Send("AUTH OAUTHBEARER")
			c.Expect("334 ")
			c.Send(oauthbearer("", tok))
		}},
		{"XOAUTH2 with initial response", func(c *client) {
			c.Send("auth xoauth2 " + xoauth2("alice", tok))
		}},
		{"XOAUTH2 without initial response", func(c *client) {
			c.Send("AUTH XOAUTH2")
			if got := c.Expect("334"); got[0] != "334 " {
				t.Errorf("empty challenge is %q, want %q", got[0], "334 ")
			}
			c.Send(xoauth2("alice", tok))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.T = t
			c.Send("EHLO client.example")
			c.Expect("250 ")
			tc.steps(c)
			c.Expect("235 2.0.0 ")
			c.Send("MAIL FROM:<alice@example.com>")
			c.Expect("250 2.0.0 ")
			c.Send("RCPT TO:<bob@example.com>")
			c.Expect("250 2.0.0 ")
			c.Send("DATA")
			c.Expect("354 ")
			c.Send("Subject: " + tc.name + "\r\n\r\nhello\r\n.")
			c.Expect("250 2.0.0 Ok: queued as 4XyZ")
			c.Send("QUIT")
			c.Expect("221 2.0.0 ")
			c.ExpectEOF()
			m := e.nextMessage(t)
			if m.User != "alice" || m.From != "alice@example.com" || !slices.Equal(m.To, []string{"bob@example.com"}) ||
				string(m.Body) != "Subject: "+tc.name+"\r\n\r\nhello\r\n" {
				t.Errorf("sink got %+v", m)
			}
		})
	}
}

// A 16 KiB token fits the line limit; a longer line does not.
func TestLineLimit(t *testing.T) {
	e := newEnv(t, nil)
	big := e.token(t, demoissuer.Claims{Extra: map[string]any{"pad": strings.Repeat("x", 16<<10)}})
	if len(big) < 16<<10 {
		t.Fatalf("token is %d bytes", len(big))
	}
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", big))
	c.Expect("235 2.0.0 ")

	for _, steps := range [][]string{{"AUTH XOAUTH2 " + strings.Repeat("A", DefaultMaxLineLength+100)},
		{"AUTH XOAUTH2", strings.Repeat("A", DefaultMaxLineLength+100)}} {
		c = e.dial(t, true)
		c.Send("EHLO client.example")
		c.Expect("250 ")
		for i, line := range steps {
			if i > 0 {
				c.Expect("334 ")
			}
			c.Send(line)
		}
		c.expectTooLong()
		c.ExpectEOF()
	}
}

// expectTooLong reads go-smtp's answer to an over-long line: it processes the line cut at
// the limit (a cut that falls on a read boundary, so its reply varies; here a 4xx or 5xx),
// then gives 500 5.4.0 and closes.
func (c *client) expectTooLong() {
	c.T.Helper()
	const tooLong = "500 5.4.0 Too long line, closing connection"
	if last := c.Expect(""); last[len(last)-1] != tooLong {
		if code := last[len(last)-1][0]; code != '4' && code != '5' {
			c.T.Fatalf("reply to the cut line %q, want 4xx or 5xx", last)
		}
		c.Expect(tooLong)
	}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t, nil)
	expired := e.token(t, demoissuer.Claims{TTL: -time.Hour})
	wrongAud := e.token(t, demoissuer.Claims{Audience: []string{"someone-else"}})
	noScope := e.token(t, demoissuer.Claims{Scope: "openid"})
	good := e.token(t, demoissuer.Claims{})
	cases := []struct {
		name, mech, ir, reply, status string
	}{
		{"expired, AQ== reply", "OAUTHBEARER", oauthbearer("", expired), "AQ==", "invalid_token"},
		{"wrong audience, empty line", "OAUTHBEARER", oauthbearer("", wrongAud), "", "invalid_token"},
		{"wrong scope, = reply", "OAUTHBEARER", oauthbearer("", noScope), "=", "insufficient_scope"},
		{"garbage token, initial response again", "OAUTHBEARER", oauthbearer("", "abc.def.ghi"), oauthbearer("", "abc.def.ghi"), "invalid_token"},
		{"authzid is another user", "OAUTHBEARER", oauthbearer("bob", good), "AQ==", "invalid_token"},
		{"bare kvsep", "OAUTHBEARER", b64("\x01"), "AQ==", "invalid_request"},
		{"XOAUTH2 expired", "XOAUTH2", xoauth2("alice", expired), "", "401"},
		{"XOAUTH2 wrong scope", "XOAUTH2", xoauth2("alice", noScope), "", "403"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, true)
			c.T = t
			c.Send("EHLO client.example")
			c.Expect("250 ")
			c.Send("AUTH " + tc.mech + " " + tc.ir)
			if st := errorStatus(t, c.Expect("334 ")[0]); st != tc.status {
				t.Errorf("error status %q, want %q", st, tc.status)
			}
			c.Send(tc.reply)
			c.Expect("535 5.7.8 ")
			// The connection is still usable, and not authenticated.
			c.Send("MAIL FROM:<alice@example.com>")
			c.Expect("530 5.7.0 ")
			c.Send("AUTH XOAUTH2 " + xoauth2("alice", good))
			c.Expect("235 2.0.0 ")
		})
	}
}

func TestAuthProtocolErrors(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	c.Send("AUTH OAUTHBEARER")
	c.Expect("334 ")
	c.Send("*") // RFC 4954 §4: cancelled
	c.Expect("501 5.0.0 ")
	c.Send("AUTH OAUTHBEARER " + oauthbearer("", "x.y.z"))
	c.Expect("334 ")
	c.Send("*") // a SASL abort answers the error challenge too (RFC 7628 §3.2.3)
	c.Expect("501 5.0.0 ")
	c.Send("AUTH OAUTHBEARER =") // "=" is the empty initial response
	c.Expect("501 5.5.2 ")
	c.Send("AUTH XOAUTH2 " + b64("no kvpairs here"))
	c.Expect("501 5.5.2 ")
	c.Send("AUTH PLAIN " + b64("\x00alice\x00pw"))
	c.Expect("504 5.7.4 ")
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("530 5.7.0 ")
	c.Send("RCPT TO:<bob@example.com>")
	c.Expect("502 5.5.1 ")
	c.Send("DATA")
	c.Expect("502 5.5.1 ")
	c.Send("NOOP")
	c.Expect("250 2.0.0 ")
}

// A client that never answers the error challenge gets its 535 after the short error-reply
// timeout, and the connection closes.
func TestSilentClientAfterErrorChallenge(t *testing.T) {
	e := newEnv(t, nil, func(s *Server) { s.Config.ErrorReplyTimeout = config.Duration(200 * time.Millisecond) })
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	start := time.Now()
	c.Send("AUTH OAUTHBEARER " + oauthbearer("", "not-a-jwt"))
	c.Expect("334 ")
	c.Expect("535 5.7.8 ")
	// Not before the configured 200 ms, and long before the 5 s default.
	if d := time.Since(start); d < 200*time.Millisecond || d >= 2*time.Second {
		t.Errorf("535 came %v after AUTH, want between 200ms (error_reply_timeout) and 2s", d)
	}
	c.ExpectEOF()
}

// On the STARTTLS listener, AUTH before TLS is refused without a 334: no token is asked for in
// plain text. MAIL before AUTH needs authentication.
func TestBeforeSTARTTLS(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, false)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", e.token(t, demoissuer.Claims{})))
	c.Expect("538 5.7.11 ")
	c.Send("AUTH XOAUTH2")
	c.Expect("538 5.7.11 ")
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("530 5.7.0 ")
	// A command injected behind STARTTLS, in the same packet, is discarded (CVE-2011-0411).
	c.Send("STARTTLS\r\nMAIL FROM:<evil@example.com>")
	c.Expect("220 2.0.0 ")
	c.StartTLS(e.Cert.ClientTLS())
	c.Send("NOOP")
	c.Expect("250 2.0.0 ") // had the MAIL been executed, its reply would come first
	c.Send("EHLO client.example")
	c.Expect("250 ")
	c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", e.token(t, demoissuer.Claims{})))
	c.Expect("235 2.0.0 ")
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("250 ")
}

// Trouble behind the token check is temporary: 454 4.7.0.
func TestUnavailable(t *testing.T) {
	t.Run("backend down", func(t *testing.T) {
		e := newEnv(t, nil, func(s *Server) { s.Config.Backend.Address = "127.0.0.1:1" })
		c := e.dial(t, true)
		c.Send("EHLO client.example")
		c.Expect("250 ")
		c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
		c.Expect("454 4.7.0 ")
	})
	t.Run("backend rejects secret", func(t *testing.T) {
		e := newEnv(t, nil, func(s *Server) { s.Login.Secrets = fetest.SecretMap{"alice": "wrong"} })
		c := e.dial(t, true)
		c.Send("EHLO client.example")
		c.Expect("250 ")
		c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
		c.Expect("454 4.7.0 ")
	})
	t.Run("no secret for user", func(t *testing.T) {
		e := newEnv(t, nil, func(s *Server) { s.Login.Secrets = fetest.SecretMap{} })
		c := e.dial(t, true)
		c.Send("EHLO client.example")
		c.Expect("250 ")
		c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
		c.Expect("454 4.7.0 ")
	})
	t.Run("IdP down", func(t *testing.T) {
		e := newEnv(t, nil, func(s *Server) {
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
		c := e.dial(t, true)
		c.Send("EHLO client.example")
		c.Expect("250 ")
		c.Send("AUTH OAUTHBEARER " + oauthbearer("", tok))
		c.Expect("454 4.7.0 ")
	})
}

// Once logged in, a backend that goes away and cannot be logged in to again ends the session
// with 421 4.3.0.
func TestBackendLost(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login(t)
	e.sink.srv.Close()
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("421 4.3.0 ")
	c.ExpectEOF()
}

// Several transactions in one session, RSET, parameters, a refused recipient, BDAT and
// dot-stuffing, all relayed with the backend's replies.
func TestTransactions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login(t)

	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("250 ")
	c.Send("RCPT TO:<bob@example.com>")
	c.Expect("250 ")
	c.Send("RSET")
	c.Expect("250 2.0.0 ")
	c.Send("RCPT TO:<bob@example.com>")
	c.Expect("502 5.5.1 ")

	c.Send("MAIL FROM:<alice@example.com> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bid")
	c.Expect("250 ")
	c.Send("RCPT TO:<nobody@example.com>")
	c.Expect("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown")
	c.Send("RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.com")
	c.Expect("250 ")
	c.Send("DATA")
	c.Expect("354 ")
	c.Send("Subject: one\r\n\r\n..leading dot\r\n..\r\nlast\r\n.")
	c.Expect("250 2.0.0 Ok: queued as 4XyZ")
	m := e.nextMessage(t)
	if string(m.Body) != "Subject: one\r\n\r\n.leading dot\r\n.\r\nlast\r\n" {
		t.Errorf("body %q", m.Body)
	}
	wantMail := gosmtp.MailOptions{Size: 100, Body: gosmtp.Body8BitMIME, UTF8: true, Return: gosmtp.DSNReturnHeaders, EnvelopeID: "QQ+id"}
	if m.Mail != wantMail {
		t.Errorf("MAIL options %+v, want %+v", m.Mail, wantMail)
	}
	if !slices.Equal(m.To, []string{"bob@example.com"}) || len(m.Rcpt) != 1 ||
		!slices.Equal(m.Rcpt[0].Notify, []gosmtp.DSNNotify{gosmtp.DSNNotifySuccess, gosmtp.DSNNotifyFailure}) ||
		m.Rcpt[0].OriginalRecipient != "bob+x@example.com" || m.Rcpt[0].OriginalRecipientType != gosmtp.DSNAddressTypeRFC822 {
		t.Errorf("RCPT %q %+v", m.To, m.Rcpt)
	}

	// BDAT (RFC 3030), pipelined.
	c.Send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<carol@example.com>\r\nBDAT 14\r\nSubject: two\r\n" + "BDAT 8 LAST\r\n\n.body") // send ends the chunk with CRLF; the bare LF becomes CRLF
	c.Expect("250 ")
	c.Expect("250 ")
	c.Expect("250 2.0.0 Continue")
	c.Expect("250 2.0.0 Ok: queued as 4XyZ")
	if m := e.nextMessage(t); string(m.Body) != "Subject: two\r\n\r\n.body\r\n" || !slices.Equal(m.To, []string{"carol@example.com"}) {
		t.Errorf("BDAT message %q to %q", m.Body, m.To)
	}
	if n := e.sink.loginCount(); n != 1 {
		t.Errorf("%d backend logins, want 1 for the session", n)
	}
	c.Send("QUIT")
	c.Expect("221 ")
	c.ExpectEOF()
}

func TestSenderPolicy(t *testing.T) {
	e := newEnv(t, nil, func(s *Server) {
		s.Config.SenderPolicy = SenderToken
		s.Config.SenderAliases = map[string][]string{"alice": {"alice@example.com", "sales@example.com"}}
	})
	c := e.login(t)
	for _, from := range []string{"bob@example.com", "", "alice@example.org"} {
		c.Send("MAIL FROM:<" + from + ">")
		c.Expect("553 5.7.1 ")
	}
	for _, from := range []string{"Alice@Example.com", "sales@example.com"} {
		c.Send("MAIL FROM:<" + from + ">")
		c.Expect("250 ")
		c.Send("RSET")
		c.Expect("250 ")
	}
}

// The client vanishes mid-message: the backend connection is closed without the final dot,
// so the backend delivers nothing.
func TestClientVanishesMidData(t *testing.T) {
	for _, tc := range []struct{ cmd, close string }{
		{"DATA", "TLS close_notify"}, {"DATA", "TCP only"}, {"BDAT", "TLS close_notify"}, {"BDAT", "TCP only"},
	} {
		cmd := tc.cmd
		t.Run(tc.cmd+", "+tc.close, func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.login(t)
			c.Send("MAIL FROM:<alice@example.com>")
			c.Expect("250 ")
			c.Send("RCPT TO:<bob@example.com>")
			c.Expect("250 ")
			if cmd == "DATA" {
				c.Send("DATA")
				c.Expect("354 ")
				c.Send("Subject: half\r\n\r\nfirst half")
			} else {
				c.Send("BDAT 21\r\nSubject: half\r\n\r\nfir") // send adds CRLF: 21 bytes
				c.Expect("250 2.0.0 Continue")
				c.Send("BDAT 1000 LAST\r\nsecond half, never finished")
			}
			if tc.close == "TCP only" {
				c.NC.(*tls.Conn).NetConn().Close()
			} else {
				c.NC.Close()
			}
			select {
			case err := <-e.sink.aborted:
				t.Logf("sink saw the transfer end: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the backend transfer was not aborted")
			}
			e.expectNoMessage(t)
		})
	}
}

// RSET in the middle of BDAT abandons the backend transaction; the next one logs in again.
func TestResetDuringBDAT(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login(t)
	c.Send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nBDAT 7\r\nhello")
	c.Expect("250 ")
	c.Expect("250 ")
	c.Expect("250 2.0.0 Continue")
	c.Send("RSET")
	c.Expect("250 2.0.0 ")
	// DATA, not BDAT: go-smtp v0.25.1 reassigns its BDAT result channel while the aborted
	// transfer's goroutine may still be sending on it (a data race inside go-smtp).
	c.Send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA")
	c.Expect("250 ")
	c.Expect("250 ")
	c.Expect("354 ")
	c.Send("new\r\n.")
	c.Expect("250 2.0.0 Ok: queued as 4XyZ")
	if m := e.nextMessage(t); string(m.Body) != "new\r\n" {
		t.Errorf("body %q, want the second message only", m.Body)
	}
	e.expectNoMessage(t)
	if n := e.sink.loginCount(); n != 2 {
		t.Errorf("%d backend logins, want 2", n)
	}
}

func TestMessageTooLarge(t *testing.T) {
	e := newEnv(t, nil, func(s *Server) { s.Config.MaxMessageBytes = 1000 })
	c := e.login(t)
	c.Send("EHLO client.example")
	if got := c.Expect("250 "); !slices.Contains(got, "250 SIZE 1000") {
		t.Errorf("EHLO %q, want SIZE 1000", got)
	}
	c.Send("MAIL FROM:<alice@example.com> SIZE=2000")
	c.Expect("552 5.3.4 ")
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("250 ")
	c.Send("RCPT TO:<bob@example.com>")
	c.Expect("250 ")
	c.Send("DATA")
	c.Expect("354 ")
	c.Send(strings.Repeat("0123456789abcdef\r\n", 100) + ".")
	c.Expect("552 5.3.4 ")
	e.expectNoMessage(t)
	c.Send("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA")
	c.Expect("250 ")
	c.Expect("250 ")
	c.Expect("354 ")
	c.Send("small\r\n.")
	c.Expect("250 2.0.0 Ok: queued as 4XyZ")
	if m := e.nextMessage(t); string(m.Body) != "small\r\n" {
		t.Errorf("body %q", m.Body)
	}
}

// go-smtp's own client, with go-sasl's OAUTHBEARER client, works end to end on both listeners.
func TestGoSMTPClient(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.token(t, demoissuer.Claims{})
	cl, err := gosmtp.DialStartTLS(e.STLSAddr, e.Cert.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Auth(gosasl.NewOAuthBearerClient(&gosasl.OAuthBearerOptions{Username: "alice", Token: tok, Host: "127.0.0.1", Port: 587})); err != nil {
		t.Fatal(err)
	}
	if err := cl.SendMail("alice@example.com", []string{"bob@example.com"}, strings.NewReader("Subject: go-smtp\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := cl.Quit(); err != nil {
		t.Error(err)
	}
	if m := e.nextMessage(t); string(m.Body) != "Subject: go-smtp\r\n\r\nhi\r\n" {
		t.Errorf("body %q", m.Body)
	}

	bad, err := gosmtp.DialTLS(e.ImplAddr, e.Cert.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Auth(gosasl.NewOAuthBearerClient(&gosasl.OAuthBearerOptions{Username: "alice", Token: "nope"}))
	var oe *gosasl.OAuthBearerError
	if !errors.As(err, &oe) || oe.Status != "invalid_token" {
		t.Errorf("bad token: err = %v, want the RFC 7628 invalid_token error", err)
	}
	// go-smtp's client answers the error challenge with "*" and expects 501 (RFC 4954 §4).
	if err := bad.Noop(); err != nil {
		t.Errorf("connection unusable after the failed AUTH: %v", err)
	}
}

// messageReader is size bytes of CRLF-terminated 80-byte lines starting with a dot.
func messageReader(size int64) io.Reader {
	line := []byte(".0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789ab\r\n") // 80 bytes
	return io.LimitReader(&repeatReader{line: line}, size)
}

type repeatReader struct {
	line []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.line[r.off:])
		n += c
		r.off = (r.off + c) % len(r.line)
	}
	return n, nil
}

// A 25 MB message streams through with its bytes intact, and the heap in use grows by far
// less than its size: saslgate holds a copy buffer, not the message. What growth there is
// (3 to 5 MiB measured, with or without -race) is garbage the GC's 4 MiB minimum heap lets
// accumulate, the test's client and the sink (which keeps 1 MiB) included; Data buffering the
// message with io.ReadAll made it 58 to 88 MiB.
func TestLargeMessage(t *testing.T) {
	const size, ceiling = 25 << 20, 8 << 20
	// The ceiling assumes the default GC pacing, whatever GOGC says.
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	e := newEnv(t, nil)
	cl, err := gosmtp.DialTLS(e.ImplAddr, e.Cert.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Auth(gosasl.NewOAuthBearerClient(&gosasl.OAuthBearerOptions{Username: "alice", Token: e.token(t, demoissuer.Claims{})})); err != nil {
		t.Fatal(err)
	}
	base, peak := heapSampler()
	h := sha256.New()
	if err := cl.SendMail("alice@example.com", []string{"bob@example.com"}, io.TeeReader(messageReader(size), h)); err != nil {
		t.Fatal(err)
	}
	m := e.nextMessage(t)
	p := peak()
	t.Logf("25 MB message: heap in use %d KiB before, peak %d KiB (+%d KiB); live heap %d KiB before, peak %d KiB (+%d KiB)",
		base.inUse>>10, p.inUse>>10, (p.inUse-base.inUse)>>10, base.live>>10, p.live>>10, (p.live-base.live)>>10)
	if grew := p.inUse - base.inUse; grew >= ceiling {
		t.Errorf("heap in use grew by %d KiB while relaying a %d KiB message, want under %d KiB: is the message buffered?",
			grew>>10, size>>10, ceiling>>10)
	}
	if m.Size != size || m.Sum != [sha256.Size]byte(h.Sum(nil)) {
		t.Errorf("sink got %d bytes, sum match %v; want %d bytes, same sum", m.Size, m.Sum == [sha256.Size]byte(h.Sum(nil)), size)
	}
}

// Shutdown waits for an open session until its context ends, then ends it with 421.
func TestShutdown(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.Servers[proxy.TLSImplicit].Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded with a session open", err)
	}
	c.Expect("421 4.3.2 ")
	c.ExpectEOF()
	if _, err := tls.Dial("tcp", e.ImplAddr, e.Cert.ClientTLS()); err == nil {
		t.Error("listener still accepting after Shutdown")
	}
	if err := e.Servers[proxy.TLSImplicit].Serve(nil); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v", err)
	}
}

func TestPreauthTimeout(t *testing.T) {
	e := newEnv(t, nil, func(s *Server) { s.Config.PreauthTimeout = config.Duration(300 * time.Millisecond) })
	c := e.dial(t, true)
	c.Expect("421 4.4.2 ")
	c.ExpectEOF()
}

// The backend session ends with the client's: after QUIT, and after the idle timeout.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, nil, func(s *Server) { s.Config.IdleTimeout = config.Duration(300 * time.Millisecond) })
	c := e.login(t)
	c.Send("QUIT")
	c.Expect("221 ")
	c.ExpectEOF()
	c = e.login(t)
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("250 ")
	c.Expect("421 4.4.2 ")
	c.ExpectEOF()
	e.sink.waitLogouts(t, 2+2) // the two listeners' extension probes, and the two sessions
}

func TestConfigValidate(t *testing.T) {
	good := Config{Backend: backends.Config{Address: "127.0.0.1:587", TLS: "starttls"}}
	if err := good.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	bad := Config{
		Backend:       backends.Config{Address: "127.0.0.1", TLS: "none", Login: "xclient", Hostname: "a b"},
		SenderPolicy:  "mine",
		SenderAliases: map[string][]string{"alice": {"a <b>"}},
		IdleTimeout:   -1,
		MaxLineLength: 10,
	}
	err := bad.Validate()
	for _, want := range []string{"smtp.backend: backends: address", "hostname", "smtp.sender_policy", "smtp.sender_aliases: only used",
		`smtp.sender_aliases["alice"]`, "smtp.idle_timeout", "smtp.max_line_length"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	for _, tc := range []struct{ cfg, backend, want int64 }{{0, 0, 0}, {0, 500, 500}, {100, 0, 100}, {100, 500, 100}, {900, 500, 500}} {
		if got := (Config{MaxMessageBytes: tc.cfg}).maxMessageBytes(tc.backend); got != tc.want {
			t.Errorf("maxMessageBytes(%d) with max_message_bytes %d = %d, want %d", tc.backend, tc.cfg, got, tc.want)
		}
	}
}

// A client that keeps failing is slowed down: after limits.auth_failures failures its AUTH
// answers wait; a delay longer than what is left of the pre-auth time ends the connection
// with 454 4.7.0 instead of holding it. The limiter is told each failure.
func TestAuthFailureDelay(t *testing.T) {
	fl := proxy.NewFailureLimiter(proxy.Limits{
		AuthFailures: 1, AuthDelay: config.Duration(time.Hour), MaxAuthDelay: config.Duration(time.Hour),
	}, nil)
	e := newEnv(t, nil, func(s *Server) { s.Login.Limiter = fl })
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", "not-a-token"))
	c.Expect("334 ")
	c.Send("")
	c.Expect("535 5.7.8 ")
	if d := fl.Delay(netip.MustParseAddr("127.0.0.1"), "alice"); d != time.Hour {
		t.Fatalf("delay after one failure = %v, want 1h", d)
	}
	c.Send("AUTH XOAUTH2 " + xoauth2("alice", e.token(t, demoissuer.Claims{})))
	c.Expect("454 4.7.0 ")
	c.ExpectEOF()
}

// delayLimiter is an AuthLimiter asking the same delay of every client.
type delayLimiter struct{ delay atomic.Int64 }

func (*delayLimiter) Failed(netip.Addr, string)                {}
func (l *delayLimiter) Delay(netip.Addr, string) time.Duration { return time.Duration(l.delay.Load()) }

// The delay the limiter asks for holds back the answer to each AUTH command, the error
// challenge of a failure (whose 535 follows the client's answer) and the 235 of a success
// alike; with no delay asked, nothing waits.
func TestAuthDelayHoldsAnswer(t *testing.T) {
	const delay = 300 * time.Millisecond
	l := new(delayLimiter)
	e := newEnv(t, nil, func(s *Server) { s.Login.Limiter = l })
	// timed sends line and returns how long its reply, which must start with want, took.
	timed := func(c *client, line, want string) time.Duration {
		t.Helper()
		start := time.Now()
		c.Send(line)
		c.Expect(want)
		return time.Since(start)
	}
	bad := "AUTH XOAUTH2 " + xoauth2("alice", "not-a-token")

	l.delay.Store(int64(delay))
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	if d := timed(c, bad, "334 "); d < delay || d >= 5*time.Second {
		t.Errorf("error challenge came %v after AUTH, want the %v delay (and under 5s)", d, delay)
	}
	c.Send("")
	c.Expect("535 5.7.8 ")
	if d := timed(c, "AUTH XOAUTH2 "+xoauth2("alice", e.token(t, demoissuer.Claims{})), "235 2.0.0 "); d < delay || d >= 5*time.Second {
		t.Errorf("235 came %v after AUTH, want the %v delay (and under 5s)", d, delay)
	}

	// The best of three tries, so that a loaded machine does not fail the test.
	l.delay.Store(0)
	c = e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	var fastest time.Duration
	for i := range 3 {
		d := timed(c, bad, "334 ")
		c.Send("")
		c.Expect("535 5.7.8 ")
		if i == 0 || d < fastest {
			fastest = d
		}
	}
	if fastest >= delay {
		t.Errorf("without a delay asked, the fastest of three error challenges came %v after AUTH, want under %v", fastest, delay)
	}
}
