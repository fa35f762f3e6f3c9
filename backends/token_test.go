package backends

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// testToken is a client's access token; no error may hold it.
const testToken = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="

// The bytes login "token" sends, decoded: OAUTHBEARER's GS2 header with the user as authzid
// (escaped, RFC 5801 §4) and the auth kvpair, no host or port; XOAUTH2's user and auth.
var (
	bearerMsg  = b64("n,a=alice@example.com,\x01auth=Bearer " + testToken + "\x01\x01")
	xoauth2Msg = b64("user=alice@example.com\x01auth=Bearer " + testToken + "\x01\x01")
	// An RFC 7628 §3.2.2 error challenge.
	errChallenge = b64(`{"status":"invalid_token"}`)
)

// Login "token" sends the client's token with OAUTHBEARER or XOAUTH2, exactly; an error
// challenge is answered as the mechanism requires, and the backend's refusal rejects the
// login without the token in the error.
func TestDialIMAPToken(t *testing.T) {
	bearer := Config{TLS: "none", Login: LoginToken}
	xoauth2 := Config{TLS: "none", Login: LoginToken, TokenMechanism: TokenXOAuth2}
	for _, tc := range []struct {
		name     string
		cfg      Config
		script   []string
		wantErr  error
		wantText string
	}{{
		name: "oauthbearer, SASL-IR",
		cfg:  bearer,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER AUTH=XOAUTH2] ready",
			"C: A1 AUTHENTICATE OAUTHBEARER " + bearerMsg,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "oauthbearer, continuation",
		cfg:  Config{TLS: "none", Login: LoginToken, TokenMechanism: TokenOAuthBearer},
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] ready",
			"C: A1 AUTHENTICATE OAUTHBEARER",
			"S: + ",
			"C: " + bearerMsg,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "xoauth2, SASL-IR",
		cfg:  xoauth2,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER AUTH=XOAUTH2] ready",
			"C: A1 AUTHENTICATE XOAUTH2 " + xoauth2Msg,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "xoauth2, continuation",
		cfg:  xoauth2,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready",
			"C: A1 AUTHENTICATE XOAUTH2",
			"S: +",
			"C: " + xoauth2Msg,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "oauthbearer error challenge: AQ==, then NO rejects; echoes redacted",
		cfg:  bearer,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready",
			"C: A1 AUTHENTICATE OAUTHBEARER " + bearerMsg,
			"S: + " + errChallenge,
			"C: AQ==",
			"S: A1 NO [AUTHENTICATIONFAILED] bad " + testToken + " " + bearerMsg,
		},
		wantErr:  ErrRejected,
		wantText: `rejected login for "alice@example.com": NO [AUTHENTICATIONFAILED] bad [redacted] [redacted] after the error challenge {"status":"invalid_token"}`,
	}, {
		name: "xoauth2 error challenge: empty line, then NO rejects",
		cfg:  xoauth2,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready",
			"C: A1 AUTHENTICATE XOAUTH2",
			"S: + ",
			"C: " + xoauth2Msg,
			"S: + " + b64(`{"status":"401","schemes":"bearer"}`),
			"C: ",
			"S: A1 NO [AUTHENTICATIONFAILED] Authentication failed",
		},
		wantErr:  ErrRejected,
		wantText: `NO [AUTHENTICATIONFAILED] Authentication failed after the error challenge {"status":"401","schemes":"bearer"}`,
	}, {
		name: "NO without a challenge rejects",
		cfg:  bearer,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready",
			"C: A1 AUTHENTICATE OAUTHBEARER " + bearerMsg,
			"S: A1 NO [AUTHENTICATIONFAILED] Authentication failed",
		},
		wantErr:  ErrRejected,
		wantText: "NO [AUTHENTICATIONFAILED] Authentication failed",
	}, {
		name: "NO [UNAVAILABLE] after the challenge: unavailable",
		cfg:  bearer,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready",
			"C: A1 AUTHENTICATE OAUTHBEARER " + bearerMsg,
			"S: + " + errChallenge,
			"C: AQ==",
			"S: A1 NO [UNAVAILABLE] Temporary authentication failure",
		},
		wantErr:  ErrUnavailable,
		wantText: "Temporary authentication failure",
	}, {
		name: "OK after the error challenge: unavailable",
		cfg:  bearer,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready",
			"C: A1 AUTHENTICATE OAUTHBEARER " + bearerMsg,
			"S: + " + errChallenge,
			"C: AQ==",
			"S: A1 OK Logged in",
		},
		wantErr:  ErrUnavailable,
		wantText: "accepted the login after its error challenge",
	}, {
		name:     "mechanism not offered",
		cfg:      bearer,
		script:   []string{"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2] ready", "EOF"},
		wantErr:  ErrUnavailable,
		wantText: `backend does not offer AUTH=OAUTHBEARER (login "token", token_mechanism "oauthbearer")`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, tls.Certificate{}, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialIMAP(context.Background(), tc.cfg, "alice@example.com", testToken, Client{})
			checkDialResult(t, err, tc.wantErr, tc.wantText, testToken)
			if sess != nil {
				sess.Close()
			}
			waitScript(t, done)
		})
	}
}

func TestDialSMTPToken(t *testing.T) {
	const ehlo = "S: 250-mx.example\r\n250 AUTH PLAIN OAUTHBEARER XOAUTH2"
	bearer := Config{TLS: "none", Login: LoginToken}
	xoauth2 := Config{TLS: "none", Login: LoginToken, TokenMechanism: TokenXOAuth2}
	for _, tc := range []struct {
		name     string
		cfg      Config
		script   []string
		wantErr  error
		wantText string
	}{{
		name: "oauthbearer",
		cfg:  bearer,
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: 235 2.7.0 Authentication successful",
		},
	}, {
		name: "xoauth2",
		cfg:  xoauth2,
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH XOAUTH2 " + xoauth2Msg,
			"S: 235 2.7.0 Authentication successful",
		},
	}, {
		name: "oauthbearer error challenge: AQ==, then 535 rejects; echoes redacted",
		cfg:  bearer,
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: 334 " + errChallenge,
			"C: AQ==",
			"S: 535 5.7.8 no " + testToken + " " + bearerMsg,
		},
		wantErr:  ErrRejected,
		wantText: `rejected login for "alice@example.com": backend replied 535 5.7.8 no [redacted] [redacted] after the error challenge {"status":"invalid_token"}`,
	}, {
		name: "xoauth2 error challenge: empty line, then 535 rejects",
		cfg:  xoauth2,
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH XOAUTH2 " + xoauth2Msg,
			"S: 334 " + b64(`{"status":"401","schemes":"bearer"}`),
			"C: ",
			"S: 535 5.7.8 Authentication credentials invalid",
		},
		wantErr:  ErrRejected,
		wantText: `535 5.7.8 Authentication credentials invalid after the error challenge {"status":"401","schemes":"bearer"}`,
	}, {
		name: "235 after the error challenge: unavailable",
		cfg:  bearer,
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: 334 " + errChallenge,
			"C: AQ==",
			"S: 235 2.7.0 Authentication successful",
		},
		wantErr:  ErrUnavailable,
		wantText: "accepted the login after its error challenge",
	}, {
		name: "454: unavailable",
		cfg:  bearer,
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH OAUTHBEARER " + bearerMsg,
			"S: 454 4.7.0 Temporary authentication failure",
		},
		wantErr:  ErrUnavailable,
		wantText: "454 4.7.0 Temporary authentication failure",
	}, {
		name:     "mechanism not offered",
		cfg:      xoauth2,
		script:   []string{"S: 220 mx.example ESMTP", "C: EHLO gw.example", "S: 250-mx.example\r\n250 AUTH PLAIN OAUTHBEARER"},
		wantErr:  ErrUnavailable,
		wantText: "backend does not offer AUTH XOAUTH2",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, tls.Certificate{}, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Hostname = "gw.example"
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialSMTP(context.Background(), tc.cfg, "alice@example.com", testToken, Client{})
			checkDialResult(t, err, tc.wantErr, tc.wantText, testToken)
			if sess != nil {
				sess.Close()
			}
			waitScript(t, done)
		})
	}
}

// A token or user that would break the client response is refused before any connection,
// and the error never shows the token.
func TestTokenLoginRefusesBeforeSending(t *testing.T) {
	addr, accepted := listenCounting(t)
	cfg := Config{Address: addr, TLS: "none", Login: LoginToken, Timeout: config.Duration(time.Second)}
	for _, tc := range []struct {
		user  string
		token Secret
		want  string
	}{
		{"alice", "", `token for "alice" is empty`},
		{"alice", "abc\x01auth=Bearer x", "not printable ASCII without spaces (token redacted)"},
		{"alice", "abc def", "not printable ASCII without spaces (token redacted)"},
		{"alice", "abc\r\nA2 LOGOUT", "not printable ASCII without spaces (token redacted)"},
		{"ali\x01ce", testToken, "control characters"},
		{"alice\r\n", testToken, "CR, LF or NUL"},
		{"", testToken, "empty"},
	} {
		for proto, dial := range map[string]func() error{
			"imap": func() error { _, err := DialIMAP(context.Background(), cfg, tc.user, tc.token, Client{}); return err },
			"smtp": func() error { _, err := DialSMTP(context.Background(), cfg, tc.user, tc.token, Client{}); return err },
		} {
			err := dial()
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "not sent to the "+proto+" backend") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: user %q: err = %v, want ErrRejected, not sent, %q", proto, tc.user, err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token.Reveal()) {
				t.Errorf("%s: error shows the token: %v", proto, err)
			}
		}
	}
	select {
	case <-accepted:
		t.Error("a connection was made for a refused login")
	default:
	}
}

func TestConfigValidateToken(t *testing.T) {
	base := Config{Address: "127.0.0.1:143", TLS: "none"}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // each must appear; none: valid
	}{
		{"token", with(func(c *Config) { c.Login = LoginToken }), nil},
		{"token oauthbearer", with(func(c *Config) { c.Login, c.TokenMechanism = LoginToken, TokenOAuthBearer }), nil},
		{"token xoauth2", with(func(c *Config) { c.Login, c.TokenMechanism = LoginToken, TokenXOAuth2 }), nil},
		{"unknown mechanism", with(func(c *Config) { c.Login, c.TokenMechanism = LoginToken, "PLAIN" }),
			[]string{`token_mechanism: "PLAIN" is not "oauthbearer" or "xoauth2"`}},
		{"mechanism upper case", with(func(c *Config) { c.Login, c.TokenMechanism = LoginToken, "XOAUTH2" }),
			[]string{`token_mechanism: "XOAUTH2" is not "oauthbearer" or "xoauth2"`}},
		{"mechanism without login token", with(func(c *Config) { c.TokenMechanism = TokenXOAuth2 }),
			[]string{`token_mechanism: only used with login "token"`}},
		{"mechanism with login master", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile, c.TokenMechanism = LoginMaster, "admin", "/m", TokenOAuthBearer
		}), []string{`token_mechanism: only used with login "token"`}},
		{"master keys with login token", with(func(c *Config) { c.Login, c.MasterUser = LoginToken, "admin" }),
			[]string{`master_user: only used with login "master" or "master_separator"`}},
		{"unknown login names token", with(func(c *Config) { c.Login = "bearer" }),
			[]string{`login: "bearer" is not "plain", "login", "master", "master_separator", "token" or "xclient"`}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkValidate(t, tc.cfg, tc.want) })
	}
}

func TestPassesToken(t *testing.T) {
	for login, want := range map[string]bool{
		"": false, LoginPlain: false, LoginLogin: false, LoginMaster: false,
		LoginMasterSeparator: false, LoginXClient: false, LoginToken: true,
	} {
		c := Config{Login: login}
		if got := c.PassesToken(); got != want {
			t.Errorf("login %q: PassesToken = %v, want %v", login, got, want)
		}
		if want && c.NeedsUserSecret() {
			t.Errorf("login %q: NeedsUserSecret = true, want false", login)
		}
	}
}
