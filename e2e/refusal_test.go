package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/backends"
)

// TestBackendRefusalRemembered: a valid token whose backend login real Dovecot refuses (here
// saslgate's HMAC key differs from the one Dovecot's passdb was made with: key drift). The
// client gets NO [UNAVAILABLE] every time, and however fast it retries, Dovecot is asked twice
// (saslgate remembers a login refused twice for 30 s; the first refusal is not remembered, so
// an admin's retry after fixing the passdb goes through); before, one client made 833 backend
// logins a second. (That the refusals also count for the failure delay is TestLoginBackendRefusal's.)
func TestBackendRefusalRemembered(t *testing.T) {
	e := e2e(t)
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if _, err := backends.NewHMACKeyFile(otherKey); err != nil {
		t.Fatal(err)
	}
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-refused",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		hmacKey: otherKey,
	})
	logStart := fileSize(t, e.dovecot.log)
	tok := e.mint(t, e.idp, mintRequest{})
	const tries = 30
	for range tries {
		e.loginUnavailable(t, g, tok)
	}
	waitLog(t, e.dovecot.log, "Password mismatch")
	b, err := os.ReadFile(e.dovecot.log)
	if err != nil {
		t.Fatal(err)
	}
	var attempts int
	for _, line := range strings.Split(string(b[logStart:]), "\n") {
		if strings.Contains(line, "Password mismatch") && strings.Contains(line, mailUser) {
			attempts++
		}
	}
	if attempts != 2 {
		t.Errorf("%d logins refused by saslgate reached Dovecot %d times, want 2", tries, attempts)
	}
	// The admin is told, once, not 30 times.
	lb, _ := os.ReadFile(g.log)
	if n := strings.Count(string(lb), "backend refused the login of a valid token"); n != 1 {
		t.Errorf("saslgate logged the refusal %d times, want once a minute per user", n)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
