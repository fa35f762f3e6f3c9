package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
)

// TestMasterLogin: saslgate logs in to a Dovecot of the test's own whose passdb holds no
// password for alice or bob, as a master user of a master passdb (auth_master_user_separator
// = *): with login master (AUTHENTICATE PLAIN, authzid = the user, authcid = the master user,
// RFC 4616) and with login master_separator (LOGIN "alice@example.com*master"), and without
// any secrets section. A client with alice's token reaches alice's own mailbox and SELECTs
// her INBOX. A wrong master secret (the file is re-read at each login) gives the client
// NO [UNAVAILABLE], and the secret appears in no log of saslgate's.
func TestMasterLogin(t *testing.T) {
	e := e2e(t)
	const master, secret = "saslgate-master", "e2e-master-secret-7Qk"
	dir := filepath.Join(e.dir, "dovecot-master")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := startDovecotWith(ctx, dir, dovecotOptions{master: &masterUser{master, secret}})
	if d != nil && d.proc != nil {
		t.Cleanup(func() {
			d.proc.stop()
			if t.Failed() {
				t.Logf("----- dovecot-master/dovecot.log (tail) -----\n%s", tail(d.log, 8<<10))
			}
		})
	}
	if err != nil {
		t.Fatalf("dovecot with a master passdb: %v", err)
	}
	// Nothing but the master user logs in: not alice's derived secret, not an empty password.
	for _, pass := range []string{backends.DeriveSecret(e.hmacKey, mailUser).Reveal(), ""} {
		if err := d.checkLogin(mailUser, pass); err == nil {
			t.Fatalf("dovecot-master let %s log in with a password of her own", mailUser)
		}
	}
	tok := e.grantToken(t, "alice")

	for _, mode := range []string{backends.LoginMaster, backends.LoginMasterSeparator} {
		t.Run(mode, func(t *testing.T) {
			secretFile := filepath.Join(dir, mode+".secret")
			if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			g := e.startTestGate(t, gateSpec{
				name:    "saslgate-" + strings.ReplaceAll(mode, "_", "-"),
				backend: d.addr,
				issuers: []string{jwtIssuer(e.idp.issuer)},
				login:   fmt.Sprintf("login: %s, master_user: %s, master_secret_file: %q", mode, master, secretFile),
			})
			t.Cleanup(func() { noSecretInLog(t, g.log, secret) })
			if b, err := os.ReadFile(g.conf); err != nil || strings.Contains(string(b), "secrets:") {
				t.Fatalf("the gate's configuration has a secrets section (%v)", err)
			}
			logStart := fileSize(t, d.log)

			w := dialWire(t, g.imaps, e.tlsConfig())
			w.greeting()
			e.login(t, w, "a", tok)
			w.send("b SELECT INBOX")
			untagged, _ := w.expectTagged("b", "OK [READ-WRITE]")
			if !slices.Contains(untagged, "* 1 EXISTS") {
				t.Errorf("SELECT INBOX: %q, want alice's one seeded message (* 1 EXISTS)", untagged)
			}
			w.send("c FETCH 1 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
			fetched, _ := w.expectTagged("c", "OK")
			if !strings.Contains(strings.Join(fetched, "\n"), "<seed-1@saslgate.e2e>") {
				t.Errorf("FETCH: %q, want alice's seeded Message-ID", fetched)
			}
			w.send("d LOGOUT")
			w.expectTagged("d", "OK")
			// Dovecot logged in alice, through the master passdb.
			waitLog(t, d.log, "Login: user=<"+mailUser+">")
			b, _ := os.ReadFile(d.log)
			if log := string(b[logStart:]); !strings.Contains(log, "Master user logging in as "+mailUser) {
				t.Errorf("dovecot-master's log does not show a master login as %s:\n%s", mailUser, log)
			}

			// A wrong master secret: the backend refuses, the client may try again later.
			if err := os.WriteFile(secretFile, []byte("not-the-master-secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			e.loginUnavailable(t, g, tok)
			waitLog(t, g.log, "backend refused the login of a valid token")
		})
	}
}

// noSecretInLog fails t if the log at path holds secret.
func noSecretInLog(t *testing.T, path, secret string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	if i := strings.Index(string(b), secret); i >= 0 {
		t.Errorf("%s logs the master secret: %.200s", filepath.Base(path), b[max(0, i-100):])
	}
}
