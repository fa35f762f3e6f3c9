package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/binding"
	"github.com/saslgate/saslgate/tls/certs"
)

const testToken = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"

// server is a scripted peer: each step either expects a client line (C) or sends a
// server line (S), in the style of go-imap's and go-smtp's transcript tests.
type server struct {
	t       *testing.T
	tlsConf *tls.Config
	conn    net.Conn
	br      *bufio.Reader
}

func (s *server) S(line string) {
	s.t.Helper()
	if _, err := s.conn.Write([]byte(line + "\r\n")); err != nil {
		s.t.Errorf("server write %q: %v", line, err)
	}
}

// C reads a client line; it must start with prefix. The rest is returned.
func (s *server) C(prefix string) string {
	s.t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := s.br.ReadString('\n')
	if err != nil {
		s.t.Errorf("server read (want %q): %v", prefix, err)
		return ""
	}
	line = strings.TrimSuffix(line, "\r\n")
	if !strings.HasPrefix(line, prefix) {
		s.t.Errorf("client sent %q, want prefix %q", line, prefix)
	}
	return strings.TrimPrefix(line, prefix)
}

func (s *server) startTLS() *tls.ConnectionState {
	tc := tls.Server(s.conn, s.tlsConf)
	if err := tc.Handshake(); err != nil {
		s.t.Errorf("server handshake: %v", err)
		return nil
	}
	s.conn, s.br = tc, bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

// decode is the base64-decoded client message.
func (s *server) decode(b64 string) sasl.Credentials {
	s.t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		s.t.Fatalf("client message is not base64: %v", err)
	}
	parse := sasl.ParseOAuthBearer
	if strings.HasPrefix(string(raw), "user=") {
		parse = sasl.ParseXOAuth2
	}
	c, err := parse(raw)
	if err != nil {
		s.t.Fatalf("client message does not parse: %v", err)
	}
	return c
}

// run serves script on a loopback listener and probes it with o.
func run(t *testing.T, o Options, script func(s *server)) (*Result, string, error) {
	t.Helper()
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	srvConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s := &server{t: t, tlsConf: srvConf, conn: c, br: bufio.NewReader(c)}
		if o.TLS == TLSImplicit {
			s.startTLS()
		}
		script(s)
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	o.Address = ln.Addr().String()
	o.TLSConfig = &tls.Config{RootCAs: pool}
	o.Timeout = 10 * time.Second
	var transcript bytes.Buffer
	o.Transcript = &transcript
	res, err := Run(context.Background(), o)
	<-done
	out := transcript.String()
	if strings.Contains(out, testToken) || strings.Contains(out, "c2VjcmV0LXBheWxvYWQ") {
		t.Errorf("transcript shows the token:\n%s", out)
	}
	return res, out, err
}

func TestIMAPSOAuthBearerSASLIR(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: IMAP, TLS: TLSImplicit}, Mechanism: sasl.OAuthBearer, User: "alice@example.com", Token: testToken},
		func(s *server) {
			s.S("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER AUTH=XOAUTH2] ready")
			c := s.decode(s.C("p1 AUTHENTICATE OAUTHBEARER "))
			if c.Token != testToken || c.AuthzID != "alice@example.com" || c.Host != "127.0.0.1" || c.Port == 0 || c.CBFlag != 'n' {
				t.Errorf("credentials %v", c)
			}
			s.S("p1 OK [CAPABILITY IMAP4rev1 IDLE] logged in")
			s.C("p2 LOGOUT")
			s.S("* BYE bye")
			s.S("p2 OK done")
		})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !res.Authenticated || strings.Join(res.Capabilities, " ") != "IMAP4rev1 IDLE" || res.TLS == nil {
		t.Errorf("result %+v", res)
	}
	for _, want := range []string{"* TLS ", "C: p1 AUTHENTICATE OAUTHBEARER <n,a=alice@example.com,^Ahost=127.0.0.1^Aport=", "auth=Bearer [token redacted, ", "S: p1 OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q:\n%s", want, out)
		}
	}
}

func TestIMAPStartTLSErrorChallenge(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: IMAP, TLS: TLSStartTLS}, Mechanism: sasl.OAuthBearer, Token: testToken},
		func(s *server) {
			s.S("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready")
			s.C("p1 STARTTLS")
			s.S("p1 OK begin TLS")
			s.startTLS()
			s.C("p2 CAPABILITY")
			s.S("* CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER")
			s.S("p2 OK done")
			s.C("p3 AUTHENTICATE OAUTHBEARER")
			s.S("+ ")
			s.decode(s.C(""))
			s.S("+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"invalid_token"}`)))
			if r := s.C(""); r != "AQ==" {
				t.Errorf("reply to the error challenge %q, want AQ== (RFC 7628 §3.2.3)", r)
			}
			s.S("p3 NO [AUTHENTICATIONFAILED] failed")
			s.C("p4 LOGOUT")
			s.S("p4 OK bye")
		})
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("err %v, want ErrAuthFailed\n%s", err, out)
	}
	if string(res.Challenge) != `{"status":"invalid_token"}` || res.Authenticated {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(out, `* error challenge: {"status":"invalid_token"}`) {
		t.Errorf("transcript lacks the decoded challenge:\n%s", out)
	}
}

func TestSMTPStartTLSXOAuth2Refused(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: SMTP, TLS: TLSStartTLS}, Mechanism: sasl.XOAuth2, User: "alice@example.com", Token: testToken},
		func(s *server) {
			s.S("220 mx ESMTP")
			s.C("EHLO localhost")
			s.S("250-mx")
			s.S("250-PIPELINING")
			s.S("250 STARTTLS")
			s.C("STARTTLS")
			s.S("220 go ahead")
			s.startTLS()
			s.C("EHLO localhost")
			s.S("250-mx")
			s.S("250 AUTH OAUTHBEARER XOAUTH2")
			c := s.decode(s.C("AUTH XOAUTH2 "))
			if c.AuthzID != "alice@example.com" || c.Token != testToken {
				t.Errorf("credentials %v", c)
			}
			s.S("334 " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer"}`)))
			if r := s.C(""); r != "" {
				t.Errorf("XOAUTH2 reply to the error challenge %q, want an empty line", r)
			}
			s.S("535 5.7.8 Authentication credentials invalid")
			s.C("QUIT")
			s.S("221 bye")
		})
	if !errors.Is(err, ErrAuthFailed) || !strings.Contains(err.Error(), "535 5.7.8") {
		t.Fatalf("err %v, want ErrAuthFailed with 535\n%s", err, out)
	}
	if strings.Join(res.Capabilities, ",") != "AUTH OAUTHBEARER XOAUTH2" {
		t.Errorf("capabilities after STARTTLS %q", res.Capabilities)
	}
}

func TestSMTPSChannelBinding(t *testing.T) {
	for _, cb := range []string{TLSExporter, TLSServerEndPoint} {
		t.Run(cb, func(t *testing.T) {
			res, out, err := run(t, Options{Target: Target{Protocol: SMTP, TLS: TLSImplicit}, Mechanism: sasl.OAuthBearer, Token: testToken, ChannelBinding: cb},
				func(s *server) {
					st := s.conn.(*tls.Conn).ConnectionState()
					var want []byte
					if cb == TLSExporter {
						want, _ = st.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
					} else {
						leaf, _ := x509.ParseCertificate(s.tlsConf.Certificates[0].Certificate[0])
						want, _ = binding.ServerEndPointData(leaf)
					}
					s.S("220 mx ESMTP")
					s.C("EHLO localhost")
					s.S("250-mx")
					s.S("250 AUTH OAUTHBEARER")
					c := s.decode(s.C("AUTH OAUTHBEARER "))
					if c.CBFlag != 'p' || c.CBType != cb || !bytes.Equal(c.CBData, want) || len(want) == 0 {
						t.Errorf("binding %c %q %x, want p %q %x", c.CBFlag, c.CBType, c.CBData, cb, want)
					}
					s.S("235 2.7.0 Authentication successful")
					s.C("QUIT")
					s.S("221 bye")
				})
			if err != nil || !res.Authenticated {
				t.Fatalf("err %v, result %+v\n%s", err, res, out)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	cases := []struct {
		in   string
		want Target
		err  bool
	}{
		{"imaps://mail.example.com", Target{IMAP, TLSImplicit, "mail.example.com:993"}, false},
		{"imap+starttls://127.0.0.1:1143", Target{IMAP, TLSStartTLS, "127.0.0.1:1143"}, false},
		{"smtps://[::1]", Target{SMTP, TLSImplicit, "[::1]:465"}, false},
		{"smtp+starttls://mail.example.com", Target{SMTP, TLSStartTLS, "mail.example.com:587"}, false},
		{"imap://127.0.0.1:143", Target{IMAP, TLSNone, "127.0.0.1:143"}, false},
		{"pop3s://mail.example.com", Target{POP3, TLSImplicit, "mail.example.com:995"}, false},
		{"pop3+stls://mail.example.com", Target{POP3, TLSStartTLS, "mail.example.com:110"}, false},
		{"POP3+STARTTLS://mail.example.com:1110", Target{POP3, TLSStartTLS, "mail.example.com:1110"}, false},
		{"pop3://mail.example.com", Target{POP3, TLSNone, "mail.example.com:110"}, false},
		{"sieve://mail.example.com", Target{Sieve, TLSStartTLS, "mail.example.com:4190"}, false},
		{"sieve+implicit://mail.example.com:4191", Target{Sieve, TLSImplicit, "mail.example.com:4191"}, false},
		{"sieve+implicit://mail.example.com", Target{}, true}, // no usual port
		{"sieve+plaintext://127.0.0.1", Target{Sieve, TLSNone, "127.0.0.1:4190"}, false},
		{"pop4://mail.example.com", Target{}, true},
		{"sieves://mail.example.com", Target{}, true},
		{"imaps://alice@mail.example.com", Target{}, true},
		{"imaps://mail.example.com:99999", Target{}, true},
		{"mail.example.com:993", Target{}, true},
	}
	for _, c := range cases {
		got, err := ParseURL(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

// A client certificate (for RFC 8705 certificate-bound tokens) is presented when configured.
func TestClientCertificate(t *testing.T) {
	clientCert, _, err := certs.SelfSigned("alice")
	if err != nil {
		t.Fatal(err)
	}
	cert, certPEM, _ := certs.SelfSigned("127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
		if tc.Handshake() != nil {
			got <- nil
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Raw
		s := &server{t: t, conn: tc, br: bufio.NewReader(tc)}
		s.S("* OK [CAPABILITY IMAP4rev1] ready")
		s.C("p1 LOGOUT")
		s.S("p1 OK bye")
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	var out bytes.Buffer
	_, err = Run(context.Background(), Options{
		Target:     Target{Protocol: IMAP, TLS: TLSImplicit, Address: ln.Addr().String()},
		TLSConfig:  &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}},
		Transcript: &out, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	if raw := <-got; !bytes.Equal(raw, clientCert.Certificate[0]) {
		t.Error("the server did not get the configured client certificate")
	}
	if !strings.Contains(out.String(), "* client certificate offered") {
		t.Errorf("transcript:\n%s", &out)
	}
}

// longToken makes the client message too long for a POP3 AUTH line (RFC 5034 §4: 255
// octets) and for a ManageSieve quoted string (RFC 5804 §4: 1024 octets), as real JWTs are.
var longToken = testToken + strings.Repeat("x", 1200)

func TestPOP3SOAuthBearer(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: POP3, TLS: TLSImplicit}, Mechanism: sasl.OAuthBearer, User: "alice@example.com", Token: testToken},
		func(s *server) {
			s.S("+OK saslgate ready.")
			s.C("CAPA")
			s.S("+OK Capability list follows")
			s.S("SASL OAUTHBEARER XOAUTH2")
			s.S("RESP-CODES")
			s.S("..stuffed")
			s.S(".")
			c := s.decode(s.C("AUTH OAUTHBEARER "))
			if c.Token != testToken || c.AuthzID != "alice@example.com" || c.Host != "127.0.0.1" || c.Port == 0 {
				t.Errorf("credentials %v", c)
			}
			s.S("+OK Logged in.")
			s.C("QUIT")
			s.S("+OK Bye")
		})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !res.Authenticated || res.Greeting != "+OK saslgate ready." || res.Final != "+OK Logged in." ||
		strings.Join(res.Capabilities, "|") != "SASL OAUTHBEARER XOAUTH2|RESP-CODES|.stuffed" {
		t.Errorf("result %+v", res)
	}
	for _, want := range []string{"C: AUTH OAUTHBEARER <n,a=alice@example.com,^Ahost=127.0.0.1^Aport=", "S: +OK Logged in.", "* authenticated with OAUTHBEARER", "C: QUIT"} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q:\n%s", want, out)
		}
	}
}

// Over STLS: CAPA before and after TLS, a line the server sent in the clear behind its +OK
// dropped with the old reader (CVE-2011-0411), a message too long for the AUTH line sent after
// "+ ", the error challenge answered as XOAUTH2 wants, and the -ERR [AUTH].
func TestPOP3STLSErrorChallenge(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: POP3, TLS: TLSStartTLS}, Mechanism: sasl.XOAuth2, User: "alice@example.com", Token: longToken},
		func(s *server) {
			s.S("+OK ready")
			s.C("CAPA")
			s.S("+OK\r\nSTLS\r\nRESP-CODES\r\n.")
			s.C("STLS")
			s.S("+OK Begin TLS negotiation now\r\n+OK injected in the clear")
			s.startTLS()
			s.C("CAPA")
			s.S("+OK\r\nSASL XOAUTH2\r\nAUTH-RESP-CODE\r\n.")
			s.C("AUTH XOAUTH2")
			s.S("+ ")
			if c := s.decode(s.C("")); c.Token != longToken || c.AuthzID != "alice@example.com" {
				t.Errorf("credentials %v", c)
			}
			s.S("+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer"}`)))
			if r := s.C(""); r != "" {
				t.Errorf("XOAUTH2 reply to the error challenge %q, want an empty line", r)
			}
			s.S("-ERR [AUTH] Authentication failed")
			s.C("QUIT")
			s.S("+OK Bye")
		})
	if !errors.Is(err, ErrAuthFailed) || !strings.Contains(err.Error(), "-ERR [AUTH] Authentication failed") {
		t.Fatalf("err %v, want ErrAuthFailed with -ERR [AUTH]\n%s", err, out)
	}
	if strings.Join(res.Capabilities, "|") != "SASL XOAUTH2|AUTH-RESP-CODE" || res.TLS == nil {
		t.Errorf("capabilities after STLS %q (TLS %v)", res.Capabilities, res.TLS != nil)
	}
	if string(res.Challenge) != `{"status":"401","schemes":"bearer"}` || res.Authenticated {
		t.Errorf("result %+v", res)
	}
	if strings.Contains(out, "injected") {
		t.Errorf("the probe read what the server sent in the clear behind STLS's +OK:\n%s", out)
	}
	for _, want := range []string{"C: STLS", "* TLS ", "longer than 255 octets", "C: AUTH XOAUTH2\n", "C: <user=alice@example.com^Aauth=Bearer [token redacted, ", `* error challenge: {"status":"401"`, "S: -ERR [AUTH]"} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q:\n%s", want, out)
		}
	}
}

// An RFC 1939 server without CAPA: capabilities unknown (nil), not an error.
func TestPOP3WithoutCAPA(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: POP3, TLS: TLSNone}},
		func(s *server) {
			s.S("+OK POP3 server ready")
			s.C("CAPA")
			s.S("-ERR unknown command")
			s.C("QUIT")
			s.S("+OK")
		})
	if err != nil || res.Capabilities != nil || !strings.Contains(out, "* the server has no CAPA") {
		t.Errorf("err %v, capabilities %q\n%s", err, res.Capabilities, out)
	}
}

// ManageSieve over STARTTLS: the capabilities the server greets with, then those it sends
// again over TLS (RFC 5804 §2.2), nothing of what it sent in the clear behind the OK; the
// OAUTHBEARER initial response as a quoted string, the error challenge as a string answered
// "AQ==", the NO.
func TestSieveStartTLSErrorChallenge(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: Sieve, TLS: TLSStartTLS}, Mechanism: sasl.OAuthBearer, Token: testToken},
		func(s *server) {
			s.S(`"IMPLEMENTATION" "saslgate"` + "\r\n" + `"SASL" ""` + "\r\n" + `"STARTTLS"` + "\r\n" + `"SIEVE" "fileinto"`)
			s.S(`OK "saslgate ready."`)
			s.C("STARTTLS")
			s.S(`OK "Begin TLS negotiation now."` + "\r\n" + `"SASL" "PLAIN"` + "\r\n" + `OK "injected in the clear"`)
			s.startTLS()
			s.S(`"IMPLEMENTATION" "saslgate"` + "\r\n" + `"SASL" "OAUTHBEARER XOAUTH2"`)
			s.S(`"SIEVE" {19}` + "\r\n" + `fileinto "vacation"`)
			s.S(`"VERSION" "1.0"` + "\r\n" + `OK "TLS negotiation successful."`)
			ir, _ := strings.CutSuffix(s.C(`AUTHENTICATE "OAUTHBEARER" "`), `"`)
			if c := s.decode(ir); c.Token != testToken {
				t.Errorf("credentials %v", c)
			}
			s.S(`"` + base64.StdEncoding.EncodeToString([]byte(`{"status":"invalid_token"}`)) + `"`)
			if r := s.C(""); r != `"AQ=="` {
				t.Errorf(`reply to the error challenge %q, want "AQ==" (RFC 7628 §3.2.3)`, r)
			}
			s.S(`NO "Authentication failed."`)
			s.C("LOGOUT")
			s.S(`OK "Logout completed."`)
		})
	if !errors.Is(err, ErrAuthFailed) || res.Final != `NO "Authentication failed."` {
		t.Fatalf("err %v, final %q; want ErrAuthFailed and the NO\n%s", err, res.Final, out)
	}
	if want := `IMPLEMENTATION saslgate|SASL OAUTHBEARER XOAUTH2|SIEVE fileinto "vacation"|VERSION 1.0`; strings.Join(res.Capabilities, "|") != want {
		t.Errorf("capabilities after STARTTLS %q, want %q", res.Capabilities, want)
	}
	if res.Greeting != `OK "saslgate ready."` || string(res.Challenge) != `{"status":"invalid_token"}` || res.TLS == nil {
		t.Errorf("result %+v", res)
	}
	if strings.Contains(out, "injected") || strings.Contains(out, `"SASL" "PLAIN"`) {
		t.Errorf("the probe read what the server sent in the clear behind STARTTLS's OK:\n%s", out)
	}
	for _, want := range []string{"C: STARTTLS", "* TLS ", `S: "fileinto \"vacation\""`, `C: AUTHENTICATE "OAUTHBEARER" "<n,,^Ahost=127.0.0.1^Aport=`, `* error challenge: {"status":"invalid_token"}`, "C: LOGOUT"} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q:\n%s", want, out)
		}
	}
}

// A client message longer than a quoted string may be goes as a literal (RFC 5804 §4).
func TestSieveImplicitLiteral(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: Sieve, TLS: TLSImplicit}, Mechanism: sasl.XOAuth2, User: "alice@example.com", Token: longToken},
		func(s *server) {
			s.S(`"IMPLEMENTATION" "saslgate"` + "\r\n" + `"SASL" "OAUTHBEARER XOAUTH2"` + "\r\n" + `OK "ready"`)
			n := s.C(`AUTHENTICATE "XOAUTH2" {`)
			if c := s.decode(s.C("")); c.Token != longToken || !strings.HasSuffix(n, "+}") {
				t.Errorf("literal %q, credentials %v", n, c)
			}
			s.S(`OK "Logged in."`)
			s.C("LOGOUT")
			s.S(`OK "Logout completed."`)
		})
	if err != nil || !res.Authenticated || res.Final != `OK "Logged in."` {
		t.Fatalf("err %v, result %+v\n%s", err, res, out)
	}
	if !strings.Contains(out, `C: AUTHENTICATE "XOAUTH2" {`) || !strings.Contains(out, "C: <user=alice@example.com^Aauth=Bearer [token redacted, ") {
		t.Errorf("transcript:\n%s", out)
	}
}

// Without an initial response the message follows the server's empty challenge.
func TestSievePlaintextNoInitialResponse(t *testing.T) {
	res, out, err := run(t, Options{Target: Target{Protocol: Sieve, TLS: TLSNone}, Mechanism: sasl.OAuthBearer, Token: testToken, NoInitialResponse: true},
		func(s *server) {
			s.S(`"IMPLEMENTATION" "Dovecot Pigeonhole"` + "\r\n" + `"SASL" "OAUTHBEARER"` + "\r\n" + `OK "ready"`)
			s.C(`AUTHENTICATE "OAUTHBEARER"`)
			s.S(`""`)
			ir, _ := strings.CutSuffix(s.C(`"`), `"`)
			if c := s.decode(ir); c.Token != testToken {
				t.Errorf("credentials %v", c)
			}
			s.S(`OK (SASL "") "Logged in."`)
			s.C("LOGOUT")
			s.S("BYE")
		})
	if err != nil || !res.Authenticated || strings.Join(res.Capabilities, "|") != "IMPLEMENTATION Dovecot Pigeonhole|SASL OAUTHBEARER" {
		t.Fatalf("err %v, result %+v\n%s", err, res, out)
	}
}

// What a server sends is bounded and must be the protocol's: the dialog stops with an error
// naming what was wrong, never hangs or grows without bound.
func TestServerOutOfBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol string
		greeting string
		want     string
	}{
		{"pop3 -ERR greeting", POP3, "-ERR go away", "not a POP3 greeting"},
		{"sieve literal too large", Sieve, `"SIEVE" {70000}`, "literal of 70000 octets, more than 65536"},
		{"sieve too many literals", Sieve, strings.Repeat(`"X" {1}`+"\r\nx", 9), "more than 8 literals"},
		{"sieve not a capability", Sieve, `"SIEVE" "a" "b"`, "not a ManageSieve capability"},
		{"sieve bad quoting", Sieve, `"SIEVE \q"`, "bad escape"},
		{"sieve NO greeting", Sieve, `NO "maintenance"`, `capability response ends with NO "maintenance"`},
		{"sieve line too long", Sieve, `"SIEVE" "` + strings.Repeat("a", maxLine) + `"`, "server line longer than"},
		{"sieve too many capabilities", Sieve, strings.Repeat(`"X"`+"\r\n", maxCapabilities+1), "more than 256 capabilities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out, err := run(t, Options{Target: Target{Protocol: tc.protocol, TLS: TLSNone}},
				func(s *server) {
					s.S(tc.greeting)
					s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					s.br.ReadByte() // until the probe gives up and closes
				})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q\n%.2000s", err, tc.want, out)
			}
		})
	}
}
