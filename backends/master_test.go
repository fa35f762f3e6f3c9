package backends

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

const masterSecret = "m4ster"

// masterSecretFile writes content to a private file and returns its path.
func masterSecretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "master.secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The master logins send the bytes of their RFC 4616 message or LOGIN command exactly; the
// per-user secret passed in is never sent.
func TestDialIMAPMaster(t *testing.T) {
	file := masterSecretFile(t, masterSecret+"\n")
	master := Config{TLS: "none", Login: LoginMaster, MasterUser: "admin", MasterSecretFile: file}
	sep := Config{TLS: "none", Login: LoginMasterSeparator, MasterUser: "admin", MasterSecretFile: file}
	withSep := func(c Config, s string) Config { c.MasterSeparator = s; return c }
	for _, tc := range []struct {
		name     string
		cfg      Config
		script   []string
		wantErr  error
		wantText string
	}{{
		name: "master, SASL-IR",
		cfg:  master,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			// base64("alice@example.com\x00admin\x00m4ster"): authzid, authcid, password.
			"C: A1 AUTHENTICATE PLAIN YWxpY2VAZXhhbXBsZS5jb20AYWRtaW4AbTRzdGVy",
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "master, continuation",
		cfg:  master,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN",
			"S: + ",
			"C: " + b64("alice@example.com\x00admin\x00"+masterSecret),
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "master_separator: LOGIN user*master",
		cfg:  sep,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			`C: A1 LOGIN "alice@example.com*admin" "m4ster"`,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "master_separator with another separator",
		cfg:  withSep(sep, "%"),
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1] ready",
			`C: A1 LOGIN "alice@example.com%admin" "m4ster"`,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
	}, {
		name: "master refused: rejected, naming the master user, echoed secret redacted",
		cfg:  master,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN " + b64("alice@example.com\x00admin\x00"+masterSecret),
			"S: A1 NO [AUTHENTICATIONFAILED] bad " + masterSecret + " " + b64("alice@example.com\x00admin\x00"+masterSecret),
		},
		wantErr:  ErrRejected,
		wantText: `rejected login for "alice@example.com" (as master user "admin"): NO [AUTHENTICATIONFAILED] bad [redacted] [redacted]`,
	}, {
		name: "master_separator refused, echoed secret redacted",
		cfg:  sep,
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1] ready",
			`C: A1 LOGIN "alice@example.com*admin" "m4ster"`,
			"S: A1 NO [AUTHENTICATIONFAILED] bad m4ster",
		},
		wantErr:  ErrRejected,
		wantText: "bad [redacted]",
	}, {
		name:     "master without AUTH=PLAIN",
		cfg:      master,
		script:   []string{"S: * OK [CAPABILITY IMAP4rev1 SASL-IR] ready", "EOF"},
		wantErr:  ErrUnavailable,
		wantText: `AUTH=PLAIN (login "master" needs it`,
	}, {
		name:     "master_separator and LOGINDISABLED",
		cfg:      sep,
		script:   []string{"S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED] ready", "EOF"},
		wantErr:  ErrUnavailable,
		wantText: "LOGINDISABLED",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, tls.Certificate{}, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialIMAP(context.Background(), tc.cfg, "alice@example.com", "users-own-secret", Client{})
			checkDialResult(t, err, tc.wantErr, tc.wantText, masterSecret)
			if sess != nil {
				sess.Close()
			}
			waitScript(t, done)
		})
	}
}

func TestDialSMTPMaster(t *testing.T) {
	file := masterSecretFile(t, masterSecret+"\r\n")
	const ehlo = "S: 250-mx.example\r\n250 AUTH PLAIN LOGIN"
	for _, tc := range []struct {
		name     string
		cfg      Config
		script   []string
		wantErr  error
		wantText string
	}{{
		name: "master: AUTH PLAIN with the user as authzid",
		cfg:  Config{TLS: "none", Login: LoginMaster, MasterUser: "admin", MasterSecretFile: file},
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH PLAIN YWxpY2VAZXhhbXBsZS5jb20AYWRtaW4AbTRzdGVy",
			"S: 235 2.7.0 Authentication successful",
		},
	}, {
		name: "master_separator: AUTH PLAIN as user*master",
		cfg:  Config{TLS: "none", Login: LoginMasterSeparator, MasterUser: "admin", MasterSecretFile: file},
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			// base64("\x00alice@example.com*admin\x00m4ster")
			"C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tKmFkbWluAG00c3Rlcg==",
			"S: 235 2.7.0 Authentication successful",
		},
	}, {
		name: "master refused: 535, echoed secret redacted",
		cfg:  Config{TLS: "none", Login: LoginMaster, MasterUser: "admin", MasterSecretFile: file},
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH PLAIN " + b64("alice@example.com\x00admin\x00"+masterSecret),
			"S: 535 5.7.8 no " + masterSecret + " " + b64("alice@example.com\x00admin\x00"+masterSecret) + " " + b64(masterSecret),
		},
		wantErr:  ErrRejected,
		wantText: `rejected login for "alice@example.com" (as master user "admin"): backend replied 535 5.7.8 no [redacted] [redacted] [redacted]`,
	}, {
		name: "master_separator refused, echoed message redacted",
		cfg:  Config{TLS: "none", Login: LoginMasterSeparator, MasterUser: "admin", MasterSecretFile: file},
		script: []string{
			"S: 220 mx.example ESMTP", "C: EHLO gw.example", ehlo,
			"C: AUTH PLAIN " + b64("\x00alice@example.com*admin\x00"+masterSecret),
			"S: 535 5.7.8 no " + b64("\x00alice@example.com*admin\x00"+masterSecret),
		},
		wantErr:  ErrRejected,
		wantText: "535 5.7.8 no [redacted]",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, tls.Certificate{}, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Hostname = "gw.example"
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialSMTP(context.Background(), tc.cfg, "alice@example.com", "", Client{})
			checkDialResult(t, err, tc.wantErr, tc.wantText, masterSecret)
			if sess != nil {
				sess.Close()
			}
			waitScript(t, done)
		})
	}
}

// waitScript waits for the script server to finish, which it cannot if no connection came.
func waitScript(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("the script server got no connection or did not finish its script")
	}
}

// checkDialResult checks a dial's error against the wanted kind and text; it must never hold
// secret (the master secret, the client's token).
func checkDialResult(t *testing.T, err, wantErr error, wantText, secret string) {
	t.Helper()
	if wantErr == nil {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if !errors.Is(err, wantErr) || !strings.Contains(errString(err), wantText) {
		t.Errorf("err = %v, want %v containing %q", err, wantErr, wantText)
	}
	if strings.Contains(errString(err), secret) {
		t.Errorf("error contains the secret: %v", err)
	}
}

// listenCounting is a listener that counts nothing but whether a connection came: the tests
// of logins refused before sending check that none did.
func listenCounting(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			ch <- struct{}{}
			c.Close()
		}
	}()
	return ln.Addr().String(), ch
}

// A user whose name holds the separator would let the backend split it elsewhere
// ("bob*x*admin" is user "bob" with Dovecot, which splits at the first separator): it is
// refused, like CR, LF and NUL, before any connection is made; and the master logins need
// no per-user secret.
func TestMasterLoginRefusesBeforeSending(t *testing.T) {
	addr, accepted := listenCounting(t)
	file := masterSecretFile(t, masterSecret)
	// A short timeout: a login that gets through waits for a greeting that never comes.
	base := Config{Address: addr, TLS: "none", MasterUser: "admin", MasterSecretFile: file, Timeout: config.Duration(time.Second)}
	type dial func(Config, string) error
	dials := map[string]dial{
		"imap": func(c Config, u string) error {
			_, err := DialIMAP(context.Background(), c, u, "", Client{})
			return err
		},
		"smtp": func(c Config, u string) error {
			_, err := DialSMTP(context.Background(), c, u, "", Client{})
			return err
		},
	}
	for proto, dial := range dials {
		for _, tc := range []struct {
			login, sep, user, want string
		}{
			{LoginMasterSeparator, "", "bob*x", `contains the master separator "*"`},
			{LoginMasterSeparator, "", "*", `contains the master separator "*"`},
			{LoginMasterSeparator, "%%", "a%%b", `contains the master separator "%%"`},
			{LoginMasterSeparator, "", "alice\r\nA2 LOGOUT", "CR, LF or NUL"},
			{LoginMaster, "", "ali\x00ce", "CR, LF or NUL"},
			{LoginMaster, "", "", "empty"},
			{LoginMaster, "", strings.Repeat("a", 256), "longer than"},
		} {
			cfg := base
			cfg.Login, cfg.MasterSeparator = tc.login, tc.sep
			err := dial(cfg, tc.user)
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "not sent to the "+proto+" backend") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %s: user %q: err = %v, want ErrRejected, not sent, %q", proto, tc.login, tc.user, err, tc.want)
			}
		}
	}
	select {
	case <-accepted:
		t.Error("a connection was made for a refused login")
	default:
	}
}

// The master secret file is read under the secret-file rule at each login; a file that
// cannot be used makes the backend unavailable, and no error shows its contents.
func TestMasterSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"readable by others", write("open", masterSecret+"\n", 0o644), "must not be accessible by group or others"},
		{"empty", write("empty", "\r\n", 0o600), "is empty"},
		{"two lines", write("two", masterSecret+"\nsecond-line\n", 0o600), "not one line"},
		{"NUL", write("nul", "m4s\x00ter", 0o600), "not one line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Login: LoginMaster, MasterUser: "admin", MasterSecretFile: tc.path}
			if _, err := cfg.MasterSecret(); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "master_secret_file") {
				t.Errorf("MasterSecret: err = %v, want one naming master_secret_file and %q", err, tc.want)
			} else if strings.Contains(err.Error(), "m4s") || strings.Contains(err.Error(), "second-line") {
				t.Errorf("error shows the file's contents: %v", err)
			}
			// Before any connection: the address is closed.
			cfg.Address, cfg.TLS = "127.0.0.1:1", "none"
			for proto, err := range map[string]error{
				"imap": func() error { _, err := DialIMAP(context.Background(), cfg, "alice", "", Client{}); return err }(),
				"smtp": func() error { _, err := DialSMTP(context.Background(), cfg, "alice", "", Client{}); return err }(),
			} {
				if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "misconfigured") || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: err = %v, want ErrUnavailable, misconfigured, %q", proto, err, tc.want)
				}
			}
		})
	}

	// The line end is not part of the secret; a replaced file applies to the next login.
	p := write("ok", masterSecret+"\r\n", 0o600)
	cfg := Config{Login: LoginMaster, MasterUser: "admin", MasterSecretFile: p}
	if s, err := cfg.MasterSecret(); err != nil || s.Reveal() != masterSecret {
		t.Errorf("MasterSecret = %q, %v; want %q", s.Reveal(), err, masterSecret)
	}
	write("ok", "rotated\n", 0o600)
	if s, err := cfg.MasterSecret(); err != nil || s.Reveal() != "rotated" {
		t.Errorf("after the file was replaced: MasterSecret = %q, %v; want %q", s.Reveal(), err, "rotated")
	}
	// It is a Secret: printing or logging it shows nothing.
	s, _ := cfg.MasterSecret()
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "secret", s, "cfg", cfg)
	for _, out := range []string{fmt.Sprintf("%v %s %q %+v %#v %x", s, s, s, s, s, s), logged.String()} {
		if strings.Contains(out, "rotated") || strings.Contains(out, "726f7461746564") {
			t.Errorf("the master secret printed: %s", out)
		}
	}
}

func TestConfigValidateMaster(t *testing.T) {
	base := Config{Address: "127.0.0.1:143", TLS: "none"}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // each must appear; none: valid
	}{
		{"master", with(func(c *Config) { c.Login, c.MasterUser, c.MasterSecretFile = LoginMaster, "admin", "/m" }), nil},
		{"master_separator", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile, c.MasterSeparator = LoginMasterSeparator, "admin", "/m", "%"
		}), nil},
		{"master needs user and file", with(func(c *Config) { c.Login = LoginMaster }),
			[]string{`master_user: required with login "master"`, `master_secret_file: required with login "master"`}},
		{"master_separator needs user and file", with(func(c *Config) { c.Login = LoginMasterSeparator }),
			[]string{`master_user: required with login "master_separator"`, `master_secret_file: required with login "master_separator"`}},
		{"master keys without a master login", with(func(c *Config) { c.MasterUser, c.MasterSecretFile, c.MasterSeparator = "admin", "/m", "*" }),
			[]string{"master_user: only used with", "master_secret_file: only used with", `master_separator: only used with login "master_separator"`}},
		{"separator with login master", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile, c.MasterSeparator = LoginMaster, "admin", "/m", "*"
		}), []string{`master_separator: only used with login "master_separator"`}},
		{"separator with a space or control", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile, c.MasterSeparator = LoginMasterSeparator, "admin", "/m", " \n"
		}), []string{"master_separator: \" \\n\" is not printable ASCII"}},
		{"separator a space", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile, c.MasterSeparator = LoginMasterSeparator, "admin", "/m", " "
		}), []string{`master_separator: " " is not printable ASCII`}},
		{"separator not ASCII", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile, c.MasterSeparator = LoginMasterSeparator, "admin", "/m", "§"
		}), []string{`master_separator: "§" is not printable ASCII`}},
		{"master user holding the separator", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile = LoginMasterSeparator, "ad*min", "/m"
		}), []string{`master_user: "ad*min" contains master_separator "*"`}},
		{"master user with a line end", with(func(c *Config) {
			c.Login, c.MasterUser, c.MasterSecretFile = LoginMaster, "admin\r\n", "/m"
		}), []string{"master_user:", "control characters"}},
		{"unknown login names the master ones", with(func(c *Config) { c.Login = "proxy" }),
			[]string{`login: "proxy" is not "plain", "login", "master", "master_separator", "token" or "xclient"`}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkValidate(t, tc.cfg, tc.want) })
	}
}

// checkValidate checks that cfg.Validate accepts cfg (want empty) or names each of want.
func checkValidate(t *testing.T, cfg Config, want []string) {
	t.Helper()
	err := cfg.Validate()
	if len(want) == 0 {
		if err != nil {
			t.Errorf("Validate = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Validate = nil, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Validate = %v\nwant it to contain %q", err, w)
		}
	}
}

func TestNeedsUserSecret(t *testing.T) {
	for login, want := range map[string]bool{
		"": true, LoginPlain: true, LoginLogin: true,
		LoginMaster: false, LoginMasterSeparator: false, LoginXClient: false, LoginToken: false,
	} {
		if got := (Config{Login: login}).NeedsUserSecret(); got != want {
			t.Errorf("login %q: NeedsUserSecret = %v, want %v", login, got, want)
		}
	}
}
