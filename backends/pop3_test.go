package backends

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// A POP3 backend's pre-login capabilities, as Dovecot 2.3 lists them.
var dovecotCapa = []string{"S: +OK", "S: CAPA", "S: TOP", "S: UIDL", "S: RESP-CODES", "S: PIPELINING", "S: AUTH-RESP-CODE", "S: USER", "S: SASL PLAIN LOGIN", "S: ."}

// capa is the script of a CAPA command answered with lines (each "S: " prefixed).
func capa(lines ...string) []string { return append([]string{"C: CAPA"}, lines...) }

// endlessCapa is a CAPA response with one capability line too many.
var endlessCapa = append([]string{"S: +OK"}, slices.Repeat([]string{"S: X-CAP"}, maxPOP3CapaLines+1)...)

func script(parts ...[]string) []string {
	var s []string
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

// DialPOP3 sends each login mode's bytes exactly, classifies the backend's answers, secures the
// connection as configured, and never shows a secret, a SASL message or a token in an error.
func TestDialPOP3Scripted(t *testing.T) {
	cert, caFile := testCert(t)
	file := masterSecretFile(t, masterSecret+"\n")
	master := Config{TLS: "none", Login: LoginMaster, MasterUser: "admin", MasterSecretFile: file}
	sep := Config{TLS: "none", Login: LoginMasterSeparator, MasterUser: "admin", MasterSecretFile: file}
	bearer := Config{TLS: "none", Login: LoginToken}
	xoauth2 := Config{TLS: "none", Login: LoginToken, TokenMechanism: TokenXOAuth2}
	// A JWT-sized token: its SASL message does not fit a 255-octet AUTH line.
	longToken := Secret(strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 20))
	longBearer := b64("n,a=alice@example.com,\x01auth=Bearer " + longToken.Reveal() + "\x01\x01")
	longSecret := Secret(strings.Repeat("p", 200))
	const user = "alice@example.com"
	greeting := "S: +OK Dovecot ready."

	for _, tc := range []struct {
		name     string
		cfg      Config
		secret   Secret // default "s3cret"
		script   []string
		client   Client
		wantErr  error  // nil: success
		wantText string // substring of the error
		pipeline string // on success: a line that must be readable from Reader
	}{{
		name: "plain: AUTH PLAIN with the initial response; bytes after +OK stay in Reader",
		cfg:  Config{TLS: "none"},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: +OK Logged in.\r\n+OK 1 120",
		}),
		pipeline: "+OK 1 120\r\n",
	}, {
		name: "plain: a message over 255 octets goes after the empty challenge",
		cfg:  Config{TLS: "none"}, secret: longSecret,
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN",
			"S: + ",
			"C: " + plainIR(user, longSecret.Reveal()),
			"S: +OK Logged in.",
		}),
	}, {
		name: "plain: -ERR [AUTH] rejects, echoed secret and message redacted",
		cfg:  Config{TLS: "none"},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: -ERR [AUTH] bad s3cret " + plainIR(user, "s3cret"),
		}),
		wantErr: ErrRejected, wantText: "-ERR [AUTH] bad [redacted] [redacted]",
	}, {
		name: "plain: -ERR without a code rejects",
		cfg:  Config{TLS: "none"},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: -ERR Authentication failed.",
		}),
		wantErr: ErrRejected, wantText: `rejected login for "alice@example.com": -ERR Authentication failed.`,
	}, {
		name: "plain: -ERR [SYS/TEMP] is temporary",
		cfg:  Config{TLS: "none"},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: -ERR [SYS/TEMP] Temporary authentication failure.",
		}),
		wantErr: ErrUnavailable, wantText: "-ERR [SYS/TEMP] Temporary authentication failure.",
	}, {
		name: "plain: -ERR [in-use/locked] is temporary",
		cfg:  Config{TLS: "none"},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: -ERR [in-use/locked] Mailbox is locked by another POP3 session.",
		}),
		wantErr: ErrUnavailable, wantText: "[IN-USE/LOCKED]",
	}, {
		name: "plain: -ERR [LOGIN-DELAY] is temporary",
		cfg:  Config{TLS: "none"},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: -ERR [LOGIN-DELAY] wait",
		}),
		wantErr: ErrUnavailable, wantText: "LOGIN-DELAY",
	}, {
		name:    "plain: no SASL PLAIN in CAPA",
		cfg:     Config{TLS: "none"},
		script:  script([]string{greeting}, capa("S: +OK", "S: USER", "S: SASL GSSAPI", "S: ."), []string{"EOF"}),
		wantErr: ErrUnavailable, wantText: `SASL PLAIN in CAPA (set login: "login"?)`,
	}, {
		name:    "plain: a backend without CAPA has no SASL",
		cfg:     Config{TLS: "none"},
		script:  script([]string{greeting}, capa("S: -ERR unknown command"), []string{"EOF"}),
		wantErr: ErrUnavailable, wantText: "SASL PLAIN",
	}, {
		name: "login: USER and PASS",
		cfg:  Config{TLS: "none", Login: LoginLogin}, secret: "pass word",
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: USER " + user,
			"S: +OK",
			"C: PASS pass word",
			"S: +OK Logged in.",
		}),
	}, {
		name: "login: without CAPA, USER and PASS all the same (RFC 1939)",
		cfg:  Config{TLS: "none", Login: LoginLogin},
		script: script([]string{greeting}, capa("S: -ERR what"), []string{
			"C: USER " + user,
			"S: +OK",
			"C: PASS s3cret",
			"S: +OK Logged in.",
		}),
	}, {
		name: "login: USER refused",
		cfg:  Config{TLS: "none", Login: LoginLogin},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: USER " + user,
			"S: -ERR [AUTH] Plaintext authentication disallowed",
		}),
		wantErr: ErrRejected, wantText: "Plaintext authentication disallowed",
	}, {
		name: "login: PASS refused, secret redacted",
		cfg:  Config{TLS: "none", Login: LoginLogin},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: USER " + user,
			"S: +OK",
			"C: PASS s3cret",
			"S: -ERR [AUTH] no such password: s3cret",
		}),
		wantErr: ErrRejected, wantText: "no such password: [redacted]",
	}, {
		name:    "login: no USER in CAPA",
		cfg:     Config{TLS: "none", Login: LoginLogin},
		script:  script([]string{greeting}, capa("S: +OK", "S: SASL PLAIN", "S: ."), []string{"EOF"}),
		wantErr: ErrUnavailable, wantText: "USER in CAPA",
	}, {
		name: "master: AUTH PLAIN with the user as authzid",
		cfg:  master,
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			// base64("alice@example.com\x00admin\x00m4ster"): authzid, authcid, password.
			"C: AUTH PLAIN YWxpY2VAZXhhbXBsZS5jb20AYWRtaW4AbTRzdGVy",
			"S: +OK Logged in.",
		}),
	}, {
		name: "master: refused, master secret redacted",
		cfg:  master,
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN YWxpY2VAZXhhbXBsZS5jb20AYWRtaW4AbTRzdGVy",
			"S: -ERR [AUTH] m4ster is wrong",
		}),
		wantErr: ErrRejected, wantText: `for "alice@example.com" (as master user "admin"): -ERR [AUTH] [redacted] is wrong`,
	}, {
		name: "master_separator: USER user*master and PASS",
		cfg:  sep,
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: USER alice@example.com*admin",
			"S: +OK",
			"C: PASS " + masterSecret,
			"S: +OK Logged in.",
		}),
	}, {
		name:    "master_separator: no USER in CAPA",
		cfg:     sep,
		script:  script([]string{greeting}, capa("S: +OK", "S: SASL PLAIN", "S: ."), []string{"EOF"}),
		wantErr: ErrUnavailable, wantText: `login: "master"`,
	}, {
		name: "token oauthbearer: initial response",
		cfg:  bearer, secret: testToken,
		script: script([]string{greeting}, capa("S: +OK", "S: SASL PLAIN OAUTHBEARER XOAUTH2", "S: ."), []string{
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: +OK Logged in.",
		}),
	}, {
		name: "token oauthbearer: a JWT-sized message after the empty challenge",
		cfg:  bearer, secret: longToken,
		script: script([]string{greeting}, capa("S: +OK", "S: SASL OAUTHBEARER", "S: ."), []string{
			"C: AUTH OAUTHBEARER",
			"S: +",
			"C: " + longBearer,
			"S: +OK Logged in.",
		}),
	}, {
		name: "token oauthbearer: error challenge answered AQ==, -ERR rejects",
		cfg:  bearer, secret: testToken,
		script: script([]string{greeting}, capa("S: +OK", "S: SASL OAUTHBEARER", "S: ."), []string{
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: + " + errChallenge,
			"C: AQ==",
			"S: -ERR [AUTH] Authentication failed " + testToken,
		}),
		wantErr: ErrRejected, wantText: `-ERR [AUTH] Authentication failed [redacted] after the error challenge {"status":"invalid_token"}`,
	}, {
		name: "token xoauth2: error challenge answered with an empty line",
		cfg:  xoauth2, secret: testToken,
		script: script([]string{greeting}, capa("S: +OK", "S: SASL XOAUTH2", "S: ."), []string{
			"C: AUTH XOAUTH2 " + xoauth2Msg,
			"S: + " + errChallenge,
			"C: ",
			"S: -ERR [SYS/TEMP] introspection failed",
		}),
		wantErr: ErrUnavailable, wantText: "[SYS/TEMP] introspection failed",
	}, {
		name: "token: +OK after the error challenge is a broken backend",
		cfg:  bearer, secret: testToken,
		script: script([]string{greeting}, capa("S: +OK", "S: SASL OAUTHBEARER", "S: ."), []string{
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: + " + errChallenge,
			"C: AQ==",
			"S: +OK what",
		}),
		wantErr: ErrUnavailable, wantText: "accepted the login after its error challenge",
	}, {
		name: "token: mechanism not in CAPA",
		cfg:  xoauth2, secret: testToken,
		script:  script([]string{greeting}, capa("S: +OK", "S: SASL PLAIN OAUTHBEARER", "S: ."), []string{"EOF"}),
		wantErr: ErrUnavailable, wantText: "SASL XOAUTH2",
	}, {
		name: "STLS: clear-text bytes after +OK are discarded, CAPA over TLS",
		cfg:  Config{TLS: "starttls", CAFile: caFile},
		script: script([]string{
			"S: +OK ready",
			"C: STLS",
			// A CAPA response without SASL PLAIN, injected in the clear.
			"S: +OK Begin TLS negotiation now.\r\n+OK\r\nSASL GSSAPI\r\n.",
			"TLS",
		}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: +OK Logged in.",
		}),
	}, {
		name:    "STLS refused",
		cfg:     Config{TLS: "starttls", CAFile: caFile},
		script:  []string{"S: +OK ready", "C: STLS", "S: -ERR TLS support isn't enabled.", "EOF"},
		wantErr: ErrUnavailable, wantText: "stls",
	}, {
		name: "implicit TLS",
		cfg:  Config{TLS: "implicit", CAFile: caFile},
		script: script([]string{"TLS", greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: +OK Logged in.",
		}),
	}, {
		name:    "greeting -ERR",
		cfg:     Config{TLS: "none"},
		script:  []string{"S: -ERR [SYS/TEMP] Too many connections", "EOF"},
		wantErr: ErrUnavailable, wantText: "greeting: -ERR [SYS/TEMP] Too many connections",
	}, {
		name:    "not POP3",
		cfg:     Config{TLS: "none"},
		script:  []string{"S: * OK [CAPABILITY IMAP4rev1] ready", "EOF"},
		wantErr: ErrUnavailable, wantText: "not a POP3 reply",
	}, {
		name:    "over-long greeting",
		cfg:     Config{TLS: "none"},
		script:  []string{"S: +OK " + strings.Repeat("x", maxPOP3Line)},
		wantErr: ErrUnavailable, wantText: "longer than 4096 bytes",
	}, {
		name:    "endless CAPA",
		cfg:     Config{TLS: "none"},
		script:  script([]string{greeting}, capa(endlessCapa...)),
		wantErr: ErrUnavailable, wantText: "more than 64 capability lines",
	}, {
		name:    "continuation where none is due",
		cfg:     Config{TLS: "none", Login: LoginLogin},
		script:  script([]string{greeting}, capa(dovecotCapa...), []string{"C: USER " + user, "S: + "}),
		wantErr: ErrUnavailable, wantText: "not a POP3 reply",
	}, {
		name:   "client address in XCLIENT, announced by the greeting",
		cfg:    Config{TLS: "none", ForwardClientAddress: true},
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000"), Local: netip.MustParseAddrPort("[2001:db8::1]:995")},
		script: script([]string{"S: +OK [XCLIENT] Dovecot ready."}, capa(dovecotCapa...), []string{
			"C: XCLIENT ADDR=192.0.2.9 PORT=40000",
			"S: +OK Updated",
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: +OK Logged in.",
		}),
	}, {
		name:   "client address in XCLIENT, announced in CAPA; a refusal does not stop the login",
		cfg:    Config{TLS: "none", ForwardClientAddress: true},
		client: Client{Addr: netip.MustParseAddrPort("[::ffff:192.0.2.9]:40000")},
		script: script([]string{greeting}, capa("S: +OK", "S: XCLIENT", "S: SASL PLAIN", "S: ."), []string{
			"C: XCLIENT ADDR=192.0.2.9 PORT=40000",
			"S: -ERR not from you",
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: +OK Logged in.",
		}),
	}, {
		name:   "no XCLIENT unless offered",
		cfg:    Config{TLS: "none", ForwardClientAddress: true},
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000")},
		script: script([]string{greeting}, capa(dovecotCapa...), []string{
			"C: AUTH PLAIN " + plainIR(user, "s3cret"),
			"S: +OK Logged in.",
		}),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, cert, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			if tc.secret == "" {
				tc.secret = "s3cret"
			}
			sess, err := DialPOP3(context.Background(), tc.cfg, user, tc.secret, tc.client)
			for _, secret := range []string{tc.secret.Reveal(), masterSecret, plainIR(user, tc.secret.Reveal())} {
				checkDialResult(t, err, tc.wantErr, tc.wantText, secret)
			}
			if sess != nil {
				if tc.pipeline != "" {
					line, err := sess.Reader.ReadString('\n')
					if err != nil || line != tc.pipeline {
						t.Errorf("Reader gave %q, %v; want the pipelined %q", line, err, tc.pipeline)
					}
				}
				sess.Close()
			}
			waitScript(t, done)
		})
	}
}

// What a login cannot carry, or a misconfigured login, is refused before any connection.
func TestDialPOP3RefusesBeforeSending(t *testing.T) {
	addr, accepted := listenCounting(t)
	file := masterSecretFile(t, masterSecret+"\n")
	for _, tc := range []struct {
		name   string
		cfg    Config
		user   string
		secret Secret
		want   error
		text   string
	}{
		{"CRLF in the user", Config{}, "alice\r\nDELE 1", "s3cret", ErrRejected, "CR, LF or NUL"},
		{"empty secret", Config{}, "alice", "", ErrRejected, "is empty"},
		{"NUL in the secret", Config{}, "alice", "a\x00b", ErrRejected, "contains NUL"},
		{"CRLF in a PASS secret", Config{Login: LoginLogin}, "alice", "pw\r\nDELE 1", ErrRejected, "contains CR or LF"},
		{"separator in the user", Config{Login: LoginMasterSeparator, MasterUser: "admin", MasterSecretFile: file}, "bob*x", "", ErrRejected, "master separator"},
		{"token with a space", Config{Login: LoginToken}, "alice", "abc def", ErrRejected, "token redacted"},
		{"xclient is for SMTP", Config{Login: LoginXClient}, "alice", "", ErrUnavailable, `login "xclient" is for SMTP backends`},
		{"invalid config", Config{Login: "nope"}, "alice", "s3cret", ErrUnavailable, "misconfigured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Address, tc.cfg.TLS, tc.cfg.Timeout = addr, "none", config.Duration(time.Second)
			_, err := DialPOP3(context.Background(), tc.cfg, tc.user, tc.secret, Client{})
			if !errors.Is(err, tc.want) || !strings.Contains(errString(err), tc.text) {
				t.Errorf("err = %v, want %v containing %q", err, tc.want, tc.text)
			}
			if tc.secret != "" && strings.Contains(errString(err), tc.secret.Reveal()) {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
	select {
	case <-accepted:
		t.Error("a connection was made for a refused login")
	default:
	}
}

func TestDialPOP3Timeout(t *testing.T) {
	cfg := Config{Address: silentServer(t, func() {}), TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	_, err := DialPOP3(context.Background(), cfg, "alice", "s3cret", Client{})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cfg = Config{Address: silentServer(t, cancel), TLS: "none", Timeout: config.Duration(time.Minute)}
	if _, err := DialPOP3(ctx, cfg, "alice", "s3cret", Client{}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want ErrUnavailable and Canceled", err)
	}
}

// The session outlives the login's deadline.
func TestDialPOP3ClearsDeadline(t *testing.T) {
	addr, done := scriptServer(t, tls.Certificate{}, script([]string{"S: +OK ready"}, capa(dovecotCapa...), []string{
		"C: AUTH PLAIN " + plainIR("alice", "s3cret"),
		"S: +OK Logged in.",
		"C: STAT",
		"S: +OK 0 0",
	}))
	cfg := Config{Address: addr, TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	sess, err := DialPOP3(context.Background(), cfg, "alice", "s3cret", Client{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	time.Sleep(250 * time.Millisecond) // real deadlines: wait past the login timeout
	if _, err := io.WriteString(sess.Conn, "STAT\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := sess.Reader.ReadString('\n'); err != nil || line != "+OK 0 0\r\n" {
		t.Errorf("read %q, %v", line, err)
	}
	<-done
}
