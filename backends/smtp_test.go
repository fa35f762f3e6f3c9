package backends

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/internal/config"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestDialSMTPScripted(t *testing.T) {
	cert, caFile := testCert(t)
	const ehloOK = "S: 250-mx.example Hello\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN"
	for _, tc := range []struct {
		name     string
		cfg      Config
		user     string
		secret   Secret
		script   []string
		wantErr  error  // nil: success
		wantText string // substring of the error
		wantExt  Extensions
		client   Client
	}{{
		name: "AUTH PLAIN, extensions from EHLO",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			ehloOK,
			"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
			"S: 235 2.7.0 Authentication successful",
		},
		wantExt: Extensions{"SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"},
	}, {
		name: "AUTH LOGIN",
		cfg:  Config{TLS: "none", Login: "login"}, user: "alice@example.com", secret: "pa ss",
		script: []string{
			"S: 220-mx.example ESMTP\r\n220 multi-line greeting",
			"C: EHLO gw.example",
			ehloOK,
			"C: AUTH LOGIN " + b64("alice@example.com"),
			"S: 334 " + b64("Password:"),
			"C: " + b64("pa ss"),
			"S: 235 2.7.0 ok",
		},
		wantExt: Extensions{"SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"},
	}, {
		name: "535 rejects, echoed secret redacted",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			ehloOK,
			"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
			"S: 535 5.7.8 bad s3cret " + plainIR("alice", "s3cret"),
		},
		wantErr: ErrRejected, wantText: "535 5.7.8 bad [redacted] [redacted]",
	}, {
		name: "454 is temporary",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			ehloOK,
			"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
			"S: 454 4.7.0 Temporary authentication failure",
		},
		wantErr: ErrUnavailable, wantText: "454 4.7.0 Temporary authentication failure",
	}, {
		name: "no AUTH PLAIN",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 AUTH GSSAPI",
			"EOF",
		},
		wantErr: ErrUnavailable, wantText: "does not offer AUTH PLAIN",
	}, {
		name: "greeting 554",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: 554 5.3.2 no service", "EOF"},
		wantErr: ErrUnavailable, wantText: "greeting: backend replied 554 5.3.2 no service",
	}, {
		name: "STARTTLS: clear-text bytes after the 220 are discarded, EHLO again over TLS",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 STARTTLS",
			"C: STARTTLS",
			"S: 220 2.0.0 go ahead\r\n250-mx.example INJECTED\r\n250 AUTH PLAIN",
			"TLS",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250-DSN\r\n250 AUTH PLAIN",
			"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
			"S: 235 2.7.0 ok",
		},
		wantExt: Extensions{"DSN": "", "AUTH": "PLAIN"},
	}, {
		name: "STARTTLS not offered: no fallback to plain text",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			ehloOK,
			"EOF",
		},
		wantErr: ErrUnavailable, wantText: "does not offer STARTTLS",
	}, {
		name: "XCLIENT LOGIN, xtext, EHLO after its 220",
		cfg:  Config{TLS: "none", Login: "xclient"}, user: "jörg+x=y z",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 XCLIENT NAME ADDR PROTO HELO login",
			"C: XCLIENT LOGIN=j+C3+B6rg+2Bx+3Dy+20z",
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 8BITMIME",
		},
		wantExt: Extensions{"8BITMIME": ""},
	}, {
		name: "XCLIENT refused",
		cfg:  Config{TLS: "none", Login: "xclient"}, user: "alice",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 XCLIENT LOGIN",
			"C: XCLIENT LOGIN=alice",
			"S: 550 5.7.0 Error: insufficient authorization",
		},
		wantErr: ErrUnavailable, wantText: "xclient: backend replied 550 5.7.0 Error: insufficient authorization",
	}, {
		name: "XCLIENT without LOGIN",
		cfg:  Config{TLS: "none", Login: "xclient"}, user: "alice",
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 XCLIENT NAME ADDR",
			"EOF",
		},
		wantErr: ErrUnavailable, wantText: "does not offer XCLIENT LOGIN",
	}, {
		name: "forwarded client address with XCLIENT LOGIN",
		cfg:  Config{TLS: "none", Login: "xclient", ForwardClientAddress: true}, user: "alice",
		client: Client{Addr: netip.MustParseAddrPort("[2001:db8::7]:50123")},
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 XCLIENT NAME ADDR PORT PROTO HELO LOGIN",
			"C: XCLIENT LOGIN=alice ADDR=IPV6:2001:db8::7 NAME=[UNAVAILABLE] PORT=50123",
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250 mx.example",
		},
		wantExt: Extensions{},
	}, {
		name: "forwarded client address, then AUTH PLAIN",
		cfg:  Config{TLS: "none", ForwardClientAddress: true}, user: "alice", secret: "s3cret",
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000")},
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			"S: 250-mx.example\r\n250 XCLIENT ADDR",
			"C: XCLIENT ADDR=192.0.2.9",
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			ehloOK,
			"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
			"S: 235 2.7.0 Authentication successful",
		},
		wantExt: Extensions{"SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"},
	}, {
		name: "forwarding skipped when the backend offers no XCLIENT",
		cfg:  Config{TLS: "none", ForwardClientAddress: true}, user: "alice", secret: "s3cret",
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000")},
		script: []string{
			"S: 220 mx.example ESMTP",
			"C: EHLO gw.example",
			ehloOK,
			"C: EHLO gw.example", // go-smtp's own; a repeated EHLO is allowed (RFC 5321 §4.1.4)
			ehloOK,
			"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
			"S: 235 2.7.0 Authentication successful",
		},
		wantExt: Extensions{"SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, cert, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Hostname = "gw.example"
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialSMTP(context.Background(), tc.cfg, tc.user, tc.secret, tc.client)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(errString(err), tc.wantText) {
					t.Errorf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantText)
				}
				if tc.secret != "" && strings.Contains(errString(err), tc.secret.Reveal()) {
					t.Errorf("error contains the secret: %v", err)
				}
				<-done
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if !maps.Equal(sess.Extensions, tc.wantExt) {
				t.Errorf("Extensions = %q, want %q", sess.Extensions, tc.wantExt)
			}
			<-done
		})
	}
}

func TestProbeSMTP(t *testing.T) {
	addr, done := scriptServer(t, tls.Certificate{}, []string{
		"S: 220 mx.example ESMTP",
		"C: EHLO gw.example",
		"S: 250-mx.example\r\n250-SIZE 52428800\r\n250-dsn\r\n250-X-UNKNOWN 1\r\n250 SMTPUTF8",
		"C: QUIT",
		"S: 221 2.0.0 Bye",
	})
	ext, err := ProbeSMTP(context.Background(), Config{Address: addr, TLS: "none", Hostname: "gw.example"})
	if err != nil {
		t.Fatal(err)
	}
	// go-smtp's client keeps keywords as sent; only the reported ones are kept.
	want := Extensions{"SIZE": "52428800", "SMTPUTF8": ""}
	if !maps.Equal(ext, want) || ext.Size() != 52428800 {
		t.Errorf("ProbeSMTP = %q (size %d), want %q", ext, ext.Size(), want)
	}
	<-done
}

func TestExtensions(t *testing.T) {
	ext := parseEHLO("mx.example greets you\nsize 100\n8BITMIME\nAUTH PLAIN  LOGIN \n\nXCLIENT NAME LOGIN")
	want := Extensions{"SIZE": "100", "8BITMIME": "", "AUTH": "PLAIN  LOGIN", "XCLIENT": "NAME LOGIN"}
	if !maps.Equal(ext, want) {
		t.Errorf("parseEHLO = %q, want %q", ext, want)
	}
	if !ext.Has("8bitmime") || ext.Has("DSN") || ext.Size() != 100 || (Extensions{"SIZE": ""}).Size() != 0 {
		t.Error("Has or Size wrong")
	}
	if got := xtext("a+b=c d\x01é~!"); got != "a+2Bb+3Dc+20d+01+C3+A9~!" {
		t.Errorf("xtext = %q", got)
	}
}

func TestDialSMTPRefusesBeforeSending(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	for _, login := range []string{"plain", "xclient"} {
		cfg := Config{Address: ln.Addr().String(), TLS: "none", Login: login}
		for _, user := range []string{"alice\r\nRSET", "alice\n", "ali\x00ce", "", strings.Repeat("a", 256)} {
			_, err := DialSMTP(context.Background(), cfg, user, "s3cret", Client{})
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "not sent to the smtp backend") {
				t.Errorf("%s: user %q: err = %v, want ErrRejected, not sent", login, user, err)
			}
		}
	}
	cfg := Config{Address: ln.Addr().String(), TLS: "none"}
	for _, secret := range []Secret{"", "se\x00cret"} {
		if _, err := DialSMTP(context.Background(), cfg, "alice", secret, Client{}); !errors.Is(err, ErrRejected) {
			t.Errorf("bad secret: err = %v, want ErrRejected", err)
		}
	}
	if _, err := DialIMAP(context.Background(), Config{Address: ln.Addr().String(), TLS: "none", Login: "xclient"}, "alice", "x", Client{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("DialIMAP with login xclient: err = %v, want ErrUnavailable", err)
	}
	ln.Close()
	select {
	case <-accepted:
		t.Error("a connection was made for a refused login")
	default:
	}
}

func TestDialSMTPTimeout(t *testing.T) {
	cfg := Config{Address: silentServer(t, func() {}), TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	_, err := DialSMTP(context.Background(), cfg, "alice", "s3cret", Client{})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg = Config{Address: silentServer(t, cancel), TLS: "none", Timeout: config.Duration(time.Minute)}
	if _, err := DialSMTP(ctx, cfg, "alice", "s3cret", Client{}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want ErrUnavailable and Canceled", err)
	}
}

// sinkBackend is a go-smtp server accepting AUTH PLAIN for alice and counting messages.
type sinkBackend struct{ got chan string }

func (b sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{b: b}, nil }

type sinkSession struct {
	b    sinkBackend
	auth bool
}

func (s *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != "alice" || pass != alicePass {
			return smtp.ErrAuthFailed
		}
		s.auth = true
		return nil
	}), nil
}
func (s *sinkSession) Mail(string, *smtp.MailOptions) error {
	if !s.auth {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err == nil {
		s.b.got <- string(b)
	}
	return err
}
func (s *sinkSession) Reset()        {}
func (s *sinkSession) Logout() error { return nil }

// TestDialSMTPServer logs in to go-smtp's server in each TLS mode, with certificate checks,
// and sends a message over the session.
func TestDialSMTPServer(t *testing.T) {
	cert, caFile := testCert(t)
	for _, mode := range []string{"none", "starttls", "implicit"} {
		t.Run(mode, func(t *testing.T) {
			be := sinkBackend{got: make(chan string, 1)}
			srv := smtp.NewServer(be)
			srv.Domain = "mx.example"
			srv.ErrorLog = log.New(io.Discard, "", 0)
			srvTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			switch mode {
			case "none":
				srv.AllowInsecureAuth = true
			case "starttls":
				srv.TLSConfig = srvTLS
			case "implicit":
				ln = tls.NewListener(ln, srvTLS)
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			cfg := Config{Address: ln.Addr().String(), TLS: mode, Timeout: config.Duration(5 * time.Second)}
			if mode != "none" {
				cfg.CAFile = caFile
			}
			if _, err := DialSMTP(context.Background(), cfg, "alice", "wrong", Client{}); !errors.Is(err, ErrRejected) {
				t.Errorf("wrong secret: err = %v, want ErrRejected", err)
			}
			if mode != "none" {
				bad := cfg
				bad.CAFile, bad.ServerName = "", "127.0.0.1"
				if _, err := DialSMTP(context.Background(), bad, "alice", alicePass, Client{}); !errors.Is(err, ErrUnavailable) {
					t.Errorf("unverifiable certificate: err = %v, want ErrUnavailable", err)
				}
			}
			sess, err := DialSMTP(context.Background(), cfg, "alice", alicePass, Client{})
			if err != nil {
				t.Fatal(err)
			}
			if !sess.Extensions.Has("AUTH") || !sess.Extensions.Has("CHUNKING") {
				t.Errorf("Extensions = %q", sess.Extensions)
			}
			if err := sess.Client.SendMail("alice@example.com", []string{"bob@example.com"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
				t.Fatal(err)
			}
			if got := <-be.got; got != "Subject: hi\r\n\r\nhello\r\n" {
				t.Errorf("backend got %q", got)
			}
			if err := sess.Client.Quit(); err != nil {
				t.Error(err)
			}
		})
	}
}

// FuzzXtext checks that an XCLIENT value never carries a byte that could end the attribute
// or the command (RFC 3461 §4 xchar only) and decodes back to the username.
func FuzzXtext(f *testing.F) {
	for _, seed := range []string{"alice", "jörg+x=y z", "a\r\nRSET", "\x00\xff", "[UNAVAILABLE]", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, user string) {
		enc := xtext(user)
		var dec []byte
		for i := 0; i < len(enc); i++ {
			c := enc[i]
			if c <= ' ' || c > '~' || c == '=' {
				t.Fatalf("xtext(%q) = %q has byte %q", user, enc, c)
			}
			if c == '+' {
				if i+2 >= len(enc) {
					t.Fatalf("xtext(%q) = %q: truncated hexchar", user, enc)
				}
				b, err := strconv.ParseUint(enc[i+1:i+3], 16, 8)
				if err != nil || strings.ToUpper(enc[i+1:i+3]) != enc[i+1:i+3] {
					t.Fatalf("xtext(%q) = %q: bad hexchar", user, enc)
				}
				dec = append(dec, byte(b))
				i += 2
				continue
			}
			dec = append(dec, c)
		}
		if string(dec) != user {
			t.Fatalf("xtext(%q) = %q decodes to %q", user, enc, dec)
		}
	})
}
