package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
)

// TestTokenLogin: saslgate passes the client's own access token on to a Dovecot of the
// test's own that validates tokens itself: an oauth2 passdb (OAUTHBEARER and XOAUTH2 only)
// POSTs each token to the introspection endpoint of the test's oidc-provider. saslgate
// introspects the same opaque token first (mode introspection) and runs without a secrets
// section, with login token and each token_mechanism. A client with alice's token SELECTs
// her INBOX; Dovecot's log shows the login by that mechanism and its introspection's
// success. Once the IdP has revoked the token, saslgate still accepts it from its cache but
// Dovecot, asking the IdP again, refuses: the client gets NO [UNAVAILABLE].
func TestTokenLogin(t *testing.T) {
	e := e2e(t)
	idp := e.startTestIdP(t, "idp-token-login")
	u, err := url.Parse(idp.issuer)
	if err != nil {
		t.Fatal(err)
	}
	introspection := fmt.Sprintf("http://%s:%s@%s/token/introspection", introspectorID, introspectorSecret, u.Host)

	dir := filepath.Join(e.dir, "dovecot-token")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := startDovecotWith(ctx, dir, dovecotOptions{key: e.hmacKey, oauth2IntrospectionURL: introspection})
	if d != nil && d.proc != nil {
		t.Cleanup(func() {
			d.proc.stop()
			if t.Failed() {
				t.Logf("----- dovecot-token/dovecot.log (tail) -----\n%s", tail(d.log, 8<<10))
			}
		})
	}
	if err != nil {
		t.Fatalf("dovecot with an oauth2 passdb: %v", err)
	}

	for _, mech := range []string{backends.TokenOAuthBearer, backends.TokenXOAuth2} {
		t.Run(mech, func(t *testing.T) {
			g := e.startTestGate(t, gateSpec{
				name:    "saslgate-token-" + mech,
				backend: d.addr,
				issuers: []string{e.introspectionIssuer(t, idp.issuer)},
				login:   "login: token, token_mechanism: " + mech,
			})
			if b, err := os.ReadFile(g.conf); err != nil || strings.Contains(string(b), "secrets:") {
				t.Fatalf("the gate's configuration has a secrets section (%v)", err)
			}
			tok := idp.mintOpaque(t, "alice")
			logStart := fileSize(t, d.log)

			w := dialWire(t, g.imaps, e.tlsConfig())
			w.greeting()
			e.login(t, w, "a", tok)
			w.send("b SELECT INBOX")
			untagged, _ := w.expectTagged("b", "OK [READ-WRITE]")
			if !slices.Contains(untagged, "* 1 EXISTS") {
				t.Errorf("SELECT INBOX: %q, want alice's one seeded message (* 1 EXISTS)", untagged)
			}
			w.send("c LOGOUT")
			w.expectTagged("c", "OK")
			// Dovecot logged alice in by the token mechanism: the passwd-file passdb was
			// skipped, the oauth2 passdb's introspection succeeded (auth_debug lines).
			waitLog(t, d.log, "Login: user=<"+mailUser+">, method="+strings.ToUpper(mech))
			b, _ := os.ReadFile(d.log)
			log := string(b[logStart:])
			for _, want := range []string{
				mech + "(" + mailUser + ",127.0.0.1,<", "): skipping passdb: mechanism filtered",
				"oauth2(" + mailUser + ",127.0.0.1,<", "): Introspection succeeded",
			} {
				if !strings.Contains(log, want) {
					t.Errorf("dovecot-token's log lacks %q:\n%s", want, log)
				}
			}

			// Revoked at the IdP: saslgate's cached validation lets it through, Dovecot's own
			// introspection now finds it inactive and refuses the login with its error
			// challenge, which saslgate answers.
			idp.revoke(t, tok)
			e.loginUnavailable(t, g, tok)
			waitLog(t, g.log, "backend refused the login of a valid token")
			waitLog(t, g.log, "NO [AUTHENTICATIONFAILED] Authentication failed. after the error challenge {")
		})
	}
}
