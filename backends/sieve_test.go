package backends

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// dovecotSieveGreeting is Dovecot Pigeonhole's greeting, abridged, as on a plaintext port.
var dovecotSieveGreeting = []string{
	`S: "IMPLEMENTATION" "Dovecot Pigeonhole"`,
	`S: "SIEVE" "fileinto reject envelope vacation"`,
	`S: "NOTIFY" "mailto"`,
	`S: "SASL" "PLAIN LOGIN OAUTHBEARER XOAUTH2"`,
	`S: "STARTTLS"`,
	`S: "VERSION" "1.0"`,
	`S: OK "Dovecot ready."`,
}

var dovecotSieveCaps = []SieveCapability{
	{Name: "IMPLEMENTATION", Value: "Dovecot Pigeonhole", HasValue: true},
	{Name: "SIEVE", Value: "fileinto reject envelope vacation", HasValue: true},
	{Name: "NOTIFY", Value: "mailto", HasValue: true},
	{Name: "SASL", Value: "PLAIN LOGIN OAUTHBEARER XOAUTH2", HasValue: true},
	{Name: "STARTTLS"},
	{Name: "VERSION", Value: "1.0", HasValue: true},
}

func greetingThen(steps ...string) []string {
	return append(slices.Clone(dovecotSieveGreeting), steps...)
}

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestDialSieveScripted(t *testing.T) {
	cert, caFile := testCert(t)
	masterFile := masterSecretFile(t, masterSecret+"\n")
	longToken := strings.Repeat("t", 1200)
	longIR := b64s("n,a=alice,\x01auth=Bearer " + longToken + "\x01\x01")
	for _, tc := range []struct {
		name     string
		cfg      Config
		user     string
		secret   Secret
		client   Client
		script   []string
		wantErr  error             // nil: success
		wantText string            // substring of the error
		wantCaps []SieveCapability // on success; nil: dovecotSieveCaps
		pipeline string            // on success: a line that must be readable from Reader
	}{{
		name: "plain, initial response quoted, pipelined line kept",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: OK "Logged in."`+"\r\n"+`OK "pipelined"`,
		),
		pipeline: `OK "pipelined"` + "\r\n",
	}, {
		name: "plain with an OK carrying a SASL code",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: OK (SASL "c2VydmVyIGRhdGE=") "Logged in."`,
		),
	}, {
		name: "master: PLAIN with the user as authzid",
		cfg:  Config{TLS: "none", Login: LoginMaster, MasterUser: "admin", MasterSecretFile: masterFile}, user: "alice@example.com",
		script: greetingThen(
			// base64("alice@example.com\x00admin\x00m4ster"): authzid, authcid, password.
			`C: AUTHENTICATE "PLAIN" "YWxpY2VAZXhhbXBsZS5jb20AYWRtaW4AbTRzdGVy"`,
			`S: OK "Logged in."`,
		),
	}, {
		name: "master_separator: PLAIN as user*master",
		cfg:  Config{TLS: "none", Login: LoginMasterSeparator, MasterUser: "admin", MasterSecretFile: masterFile}, user: "alice@example.com",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+b64s("\x00alice@example.com*admin\x00"+masterSecret)+`"`,
			`S: OK "Logged in."`,
		),
	}, {
		name: "login: LOGIN, challenges quoted and as a literal",
		cfg:  Config{TLS: "none", Login: LoginLogin}, user: "jörg", secret: "pa\"ss",
		script: greetingThen(
			`C: AUTHENTICATE "LOGIN"`,
			`S: "VXNlcm5hbWU6"`,
			`C: "`+b64s("jörg")+`"`,
			"S: {12}\r\nUGFzc3dvcmQ6",
			`C: "`+b64s("pa\"ss")+`"`,
			`S: OK "Logged in."`,
		),
	}, {
		name: "login: LOGIN not offered",
		cfg:  Config{TLS: "none", Login: LoginLogin}, user: "alice", secret: "s3cret",
		script: []string{
			`S: "IMPLEMENTATION" "x"`, `S: "SIEVE" "fileinto"`, `S: "SASL" "PLAIN"`, `S: OK`, "EOF",
		},
		wantErr: ErrUnavailable, wantText: `does not offer SASL LOGIN (set login: "plain"?)`,
	}, {
		name: "plain not offered",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			`S: "IMPLEMENTATION" "x"`, `S: "SIEVE" "fileinto"`, `S: "SASL" ""`, `S: OK`, "EOF",
		},
		wantErr: ErrUnavailable, wantText: "does not offer SASL PLAIN",
	}, {
		name: "token: OAUTHBEARER",
		cfg:  Config{TLS: "none", Login: LoginToken}, user: "alice", secret: "tok.en",
		script: greetingThen(
			`C: AUTHENTICATE "OAUTHBEARER" "`+b64s("n,a=alice,\x01auth=Bearer tok.en\x01\x01")+`"`,
			`S: OK`,
		),
	}, {
		name: "token: a long token goes as a literal",
		cfg:  Config{TLS: "none", Login: LoginToken}, user: "alice", secret: Secret(longToken),
		script: greetingThen(
			`C: AUTHENTICATE "OAUTHBEARER" {`+strconv.Itoa(len(longIR))+`+}`,
			"C: "+longIR,
			`S: OK`,
		),
	}, {
		name: "token: error challenge answered with %x01, then NO",
		cfg:  Config{TLS: "none", Login: LoginToken}, user: "alice", secret: "tok.en",
		script: greetingThen(
			`C: AUTHENTICATE "OAUTHBEARER" "`+b64s("n,a=alice,\x01auth=Bearer tok.en\x01\x01")+`"`,
			`S: "`+b64s(`{"status":"invalid_token"}`)+`"`,
			`C: "AQ=="`,
			`S: NO "Authentication failed."`,
		),
		wantErr: ErrRejected, wantText: `NO Authentication failed. after the error challenge {"status":"invalid_token"}`,
	}, {
		name: "token: XOAUTH2 error challenge answered with an empty string",
		cfg:  Config{TLS: "none", Login: LoginToken, TokenMechanism: TokenXOAuth2}, user: "alice", secret: "tok.en",
		script: greetingThen(
			`C: AUTHENTICATE "XOAUTH2" "`+b64s("user=alice\x01auth=Bearer tok.en\x01\x01")+`"`,
			"S: {36}\r\n"+b64s(`{"status":"401","schemes":"bearer"}`)[:36],
			`C: ""`,
			`S: NO`,
		),
		wantErr: ErrRejected, wantText: "after the error challenge",
	}, {
		name: "token: OK after the error challenge",
		cfg:  Config{TLS: "none", Login: LoginToken}, user: "alice", secret: "tok.en",
		script: greetingThen(
			`C: AUTHENTICATE "OAUTHBEARER" "`+b64s("n,a=alice,\x01auth=Bearer tok.en\x01\x01")+`"`,
			`S: "e30="`,
			`C: "AQ=="`,
			`S: OK`,
		),
		wantErr: ErrUnavailable, wantText: "accepted the login after its error challenge",
	}, {
		name: "token: mechanism not offered",
		cfg:  Config{TLS: "none", Login: LoginToken, TokenMechanism: TokenXOAuth2}, user: "alice", secret: "tok.en",
		script: []string{
			`S: "IMPLEMENTATION" "x"`, `S: "SIEVE" "fileinto"`, `S: "SASL" "PLAIN OAUTHBEARER"`, `S: OK`, "EOF",
		},
		wantErr: ErrUnavailable, wantText: `does not offer SASL XOAUTH2 (login "token", token_mechanism "xoauth2")`,
	}, {
		name: "NO: rejected with the backend's text, secret redacted if echoed",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: NO "bad password s3cret `+plainIR("alice", "s3cret")+`"`,
		),
		wantErr: ErrRejected, wantText: `rejected login for "alice": NO bad password [redacted] [redacted]`,
	}, {
		name: "NO with a literal text and an unknown response code",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			"S: NO (AUTH-TOO-WEAK \"x\" (y)) {7}\r\nno\r\nway",
		),
		wantErr: ErrRejected, wantText: "NO (AUTH-TOO-WEAK) no??way",
	}, {
		name: "NO (TRYLATER) is temporary",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: NO (TRYLATER) "Temporary authentication failure"`,
		),
		wantErr: ErrUnavailable, wantText: "Temporary authentication failure",
	}, {
		name: "BYE during the login",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: BYE "shutting down"`,
		),
		wantErr: ErrUnavailable, wantText: "BYE shutting down",
	}, {
		name: "unexpected challenge after PLAIN: cancelled",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: ""`,
			`C: "*"`,
			`S: NO "cancelled"`,
		),
		wantErr: ErrRejected, wantText: "NO cancelled",
	}, {
		name: "junk instead of a challenge",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: "a" "b"`,
		),
		wantErr: ErrUnavailable, wantText: "expected a challenge string",
	}, {
		name: "greeting BYE",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{`S: BYE (TRYLATER) "Too many connections"`, "EOF"},
		wantErr: ErrUnavailable, wantText: "BYE (TRYLATER) Too many connections",
	}, {
		name: "greeting NO",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{`S: "IMPLEMENTATION" "x"`, `S: NO "not now"`, "EOF"},
		wantErr: ErrUnavailable, wantText: "NO not now",
	}, {
		name: "not ManageSieve",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: 220 smtp.example.com ESMTP", "EOF"},
		wantErr: ErrUnavailable, wantText: "greeting",
	}, {
		name: "an OK without capabilities is no greeting",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: OK", "EOF"},
		wantErr: ErrUnavailable, wantText: "not a ManageSieve capability response",
	}, {
		name: "over-long line",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{`S: "IMPLEMENTATION" "` + strings.Repeat("x", maxSieveLine) + `"`},
		wantErr: ErrUnavailable, wantText: "line longer than 4096 bytes",
	}, {
		name: "over-large literal",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{`S: "IMPLEMENTATION" {65537}`},
		wantErr: ErrUnavailable, wantText: "literal of 65537 bytes",
	}, {
		name: "too many capabilities",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: " + strings.Repeat("\"X\"\r\n", maxSieveCapabilities) + `"Y"`},
		wantErr: ErrUnavailable, wantText: "more than 64 capabilities",
	}, {
		name: "capability names and values as literals, escapes in quoted strings",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			`S: "IMPLEMENTATION" "say \"hi\" \\o/"`,
			"S: {5}\r\nSIEVE {8}\r\nfileinto",
			`S: "SASL" "PLAIN"`,
			`S: ok`,
			`C: AUTHENTICATE "PLAIN" "` + plainIR("alice", "s3cret") + `"`,
			`S: Ok`,
		},
		wantCaps: []SieveCapability{
			{Name: "IMPLEMENTATION", Value: `say "hi" \o/`, HasValue: true},
			{Name: "SIEVE", Value: "fileinto", HasValue: true},
			{Name: "SASL", Value: "PLAIN", HasValue: true},
		},
	}, {
		name: "STARTTLS: clear-text bytes after the OK are discarded, capabilities read over TLS",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script: greetingThen(
			`C: STARTTLS`,
			`S: OK "Begin TLS negotiation now."`+"\r\n"+`"SASL" "INJECTED"`,
			"TLS",
			`S: "IMPLEMENTATION" "Dovecot Pigeonhole"`,
			`S: "SIEVE" "fileinto"`,
			`S: "SASL" "PLAIN"`,
			`S: "VERSION" "1.0"`,
			`S: OK "TLS negotiation successful."`,
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: OK`,
		),
		wantCaps: []SieveCapability{
			{Name: "IMPLEMENTATION", Value: "Dovecot Pigeonhole", HasValue: true},
			{Name: "SIEVE", Value: "fileinto", HasValue: true},
			{Name: "SASL", Value: "PLAIN", HasValue: true},
			{Name: "VERSION", Value: "1.0", HasValue: true},
		},
	}, {
		name: "STARTTLS not offered",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script: []string{
			`S: "IMPLEMENTATION" "x"`, `S: "SIEVE" "fileinto"`, `S: "SASL" "PLAIN"`, `S: OK`, "EOF",
		},
		wantErr: ErrUnavailable, wantText: "does not offer STARTTLS",
	}, {
		name: "STARTTLS refused",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script:  greetingThen(`C: STARTTLS`, `S: NO "no TLS here"`),
		wantErr: ErrUnavailable, wantText: "starttls",
	}, {
		name: "xclient is for SMTP",
		cfg:  Config{TLS: "none", Login: LoginXClient}, user: "alice",
		script:  []string{},
		wantErr: ErrUnavailable, wantText: `login "xclient" is for SMTP backends`,
	}, {
		name: "client address forwarded in XCLIENT before the login",
		cfg:  Config{TLS: "none", ForwardClientAddress: true}, user: "alice", secret: "s3cret",
		client: Client{Addr: netip.MustParseAddrPort("[::ffff:192.0.2.9]:40000")},
		script: []string{
			`S: "IMPLEMENTATION" "x"`, `S: "SIEVE" "fileinto"`, `S: "SASL" "PLAIN"`, `S: "XCLIENT"`, `S: OK`,
			"C: XCLIENT ADDR=192.0.2.9 PORT=40000",
			`S: NO "not trusted"`,
			`C: AUTHENTICATE "PLAIN" "` + plainIR("alice", "s3cret") + `"`,
			`S: OK`,
		},
		wantCaps: []SieveCapability{
			{Name: "IMPLEMENTATION", Value: "x", HasValue: true}, {Name: "SIEVE", Value: "fileinto", HasValue: true},
			{Name: "SASL", Value: "PLAIN", HasValue: true}, {Name: "XCLIENT"},
		},
	}, {
		name: "no XCLIENT without the capability",
		cfg:  Config{TLS: "none", ForwardClientAddress: true}, user: "alice", secret: "s3cret",
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000")},
		script: greetingThen(
			`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
			`S: OK`,
		),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, cert, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialSieve(context.Background(), tc.cfg, tc.user, tc.secret, tc.client)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(errString(err), tc.wantText) {
					t.Errorf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantText)
				}
				if tc.secret != "" && strings.Contains(errString(err), tc.secret.Reveal()) {
					t.Errorf("error contains the secret: %v", err)
				}
				if len(tc.script) == 0 {
					return // nothing was dialled: the server still waits for its one connection
				}
				<-done
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			want := tc.wantCaps
			if want == nil {
				want = dovecotSieveCaps
			}
			if !slices.Equal(sess.Capabilities, want) {
				t.Errorf("Capabilities = %+v, want %+v", sess.Capabilities, want)
			}
			if tc.pipeline != "" {
				line, err := sess.Reader.ReadString('\n')
				if err != nil || line != tc.pipeline {
					t.Errorf("Reader gave %q, %v; want the pipelined %q", line, err, tc.pipeline)
				}
			}
			<-done
		})
	}
}

// Usernames and secrets that must not reach the wire are refused before anything is dialled.
func TestDialSieveRefusesBeforeDialling(t *testing.T) {
	cfg := Config{Address: "127.0.0.1:1", TLS: "none", Timeout: config.Duration(time.Second)}
	for _, tc := range []struct {
		name   string
		cfg    Config
		user   string
		secret Secret
	}{
		{"CRLF in the username", cfg, "alice\r\nLOGOUT", "s3cret"},
		{"empty secret", cfg, "alice", ""},
		{"token with a space", Config{Address: cfg.Address, TLS: "none", Login: LoginToken}, "alice", "a b"},
	} {
		_, err := DialSieve(context.Background(), tc.cfg, tc.user, tc.secret, Client{})
		if !errors.Is(err, ErrRejected) || !strings.Contains(errString(err), "not sent to the sieve backend") {
			t.Errorf("%s: err = %v, want ErrRejected, not sent", tc.name, err)
		}
	}
}

func TestProbeSieve(t *testing.T) {
	cert, caFile := testCert(t)
	t.Run("plain", func(t *testing.T) {
		addr, done := scriptServer(t, cert, greetingThen(`C: LOGOUT`, `S: OK "Logout completed."`, "EOF"))
		caps, err := ProbeSieve(context.Background(), Config{Address: addr, TLS: "none", Timeout: config.Duration(5 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(caps, dovecotSieveCaps) {
			t.Errorf("capabilities %+v, want %+v", caps, dovecotSieveCaps)
		}
		<-done
	})
	t.Run("starttls", func(t *testing.T) {
		addr, done := scriptServer(t, cert, greetingThen(
			`C: STARTTLS`, `S: OK`, "TLS",
			`S: "IMPLEMENTATION" "Dovecot Pigeonhole"`, `S: "SIEVE" "fileinto"`, `S: "SASL" "PLAIN"`, `S: OK`,
			`C: LOGOUT`, `S: OK`, "EOF",
		))
		caps, err := ProbeSieve(context.Background(), Config{Address: addr, TLS: "starttls", CAFile: caFile, Timeout: config.Duration(5 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		want := []SieveCapability{
			{Name: "IMPLEMENTATION", Value: "Dovecot Pigeonhole", HasValue: true},
			{Name: "SIEVE", Value: "fileinto", HasValue: true},
			{Name: "SASL", Value: "PLAIN", HasValue: true},
		}
		if !slices.Equal(caps, want) {
			t.Errorf("capabilities %+v, want %+v", caps, want)
		}
		<-done
	})
	t.Run("down", func(t *testing.T) {
		_, err := ProbeSieve(context.Background(), Config{Address: "127.0.0.1:1", TLS: "none", Timeout: config.Duration(time.Second)})
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
	})
}

func TestDialSieveTimeout(t *testing.T) {
	cfg := Config{Address: silentServer(t, func() {}), TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	_, err := DialSieve(context.Background(), cfg, "alice", "s3cret", Client{})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
}

// The session's deadlines are cleared: the splice may wait on it for as long as it likes.
func TestDialSieveClearsDeadline(t *testing.T) {
	addr, done := scriptServer(t, tls.Certificate{}, greetingThen(
		`C: AUTHENTICATE "PLAIN" "`+plainIR("alice", "s3cret")+`"`,
		`S: OK`,
		"C: LISTSCRIPTS",
		`S: "late" ACTIVE`,
	))
	cfg := Config{Address: addr, TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	sess, err := DialSieve(context.Background(), cfg, "alice", "s3cret", Client{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	time.Sleep(250 * time.Millisecond) // real deadlines: wait past the login timeout
	if _, err := sess.Conn.Write([]byte("LISTSCRIPTS\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := sess.Reader.ReadString('\n'); err != nil || line != "\"late\" ACTIVE\r\n" {
		t.Errorf("read %q, %v", line, err)
	}
	<-done
}
