package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/saslgate/saslgate/backends"
)

// What idp/server.js's issue #4 block configures: opaque access tokens for
// urn:saslgate:opaque and a confidential client allowed to introspect every token.
const (
	opaqueResource     = "urn:saslgate:opaque"
	introspectorID     = "saslgate-introspector"
	introspectorSecret = "e2e-introspection-secret"
)

// TestTwoIssuers: one saslgate trusts the run's IdP in mode jwt and a second
// oidc-provider in mode introspection. A JWT goes to the first and is checked
// locally (the second is never asked), an opaque token is introspected at the
// second once and then cached, and an opaque token of an IdP saslgate does not
// trust is refused.
func TestTwoIssuers(t *testing.T) {
	e := e2e(t)
	opaque := e.startTestIdP(t, "idp-two-issuers")
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-two-issuers",
		issuers: []string{jwtIssuer(e.idp.issuer), e.introspectionIssuer(t, opaque.issuer)},
	})
	jwt := e.grantToken(t, "alice")
	opaqueTok := opaque.mintOpaque(t, "alice")
	if _, _, err := jwtParts(opaqueTok); err == nil {
		t.Fatalf("token for %s is a JWT, want an opaque one", opaqueResource)
	}

	for _, tc := range []struct {
		name, token      string
		introspectedThen int // the introspection IdP's count after the logins
	}{
		{"jwt", jwt, 0},
		{"opaque", opaqueTok, 1},
	} {
		t.Run(tc.name+"/curl", func(t *testing.T) {
			out, err := runCmd(t, "", "curl", e.curlArgs(tc.token, "imaps://"+g.imaps+"/INBOX;UID=1")...)
			if err != nil {
				t.Fatal(err)
			}
			if out != seededBody {
				t.Errorf("body:\n%q\nwant:\n%q", out, seededBody)
			}
		})
		t.Run(tc.name+"/go-imap", func(t *testing.T) {
			e.goIMAPLogin(t, g, tc.token)
		})
		if got := opaque.counts(t).Introspection; got != tc.introspectedThen {
			t.Errorf("after the %s logins the introspection endpoint saw %d requests, want %d", tc.name, got, tc.introspectedThen)
		}
	}

	t.Run("opaque token of an untrusted IdP", func(t *testing.T) {
		w := dialWire(t, g.imaps, e.tlsConfig())
		w.greeting()
		tok := (&testIdP{idp: *e.otherIdP}).mintOpaque(t, "alice")
		authFails(t, w, "OAUTHBEARER", oauthBearerIR(mailUser, "", 0, tok), "invalid_token", "AQ==")
	})
}

// goIMAPLogin logs in through g with go-imap's client and go-sasl's OAUTHBEARER
// (host and port set, as go-sasl sends them) and examines the INBOX.
func (e *env) goIMAPLogin(t *testing.T, g *gate, token string) {
	t.Helper()
	c, err := imapclient.DialTLS(g.imaps, &imapclient.Options{TLSConfig: e.tlsConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	host, portStr, _ := net.SplitHostPort(g.imaps)
	port, _ := strconv.Atoi(portStr)
	if err := c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
		Username: mailUser, Token: token, Host: host, Port: port,
	})); err != nil {
		t.Fatalf("AUTHENTICATE OAUTHBEARER: %v", err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("EXAMINE INBOX: %v", err)
	}
	if sel.NumMessages != 1 {
		t.Errorf("INBOX has %d messages, want 1", sel.NumMessages)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
}

// testIdP is an idp/server.js owned by one test: stopped by t.Cleanup, and it can
// be stopped and started again on the same port, optionally with a new signing key
// put first in its JWK Set ($IDP_KEYS_FILE keeps its keys across restarts).
type testIdP struct {
	idp
	t    *testing.T
	name string
	log  string
	keys string
	port string
}

func (e *env) startTestIdP(t *testing.T, name string) *testIdP {
	t.Helper()
	i := &testIdP{
		t:    t,
		name: name,
		log:  filepath.Join(e.dir, name+".log"),
		keys: filepath.Join(e.dir, name+".jwks.json"),
		port: "0",
	}
	t.Cleanup(func() {
		i.stop()
		if t.Failed() {
			t.Logf("----- %s (tail) -----\n%s", filepath.Base(i.log), tail(i.log, 4<<10))
		}
	})
	i.start(false)
	return i
}

// start runs server.js on i.port; rotate adds a fresh signing key in front of the
// ones in the keys file.
func (i *testIdP) start(rotate bool) {
	i.t.Helper()
	env := []string{"IDP_KEYS_FILE=" + i.keys}
	if rotate {
		env = append(env, "IDP_ROTATE_KEY=1")
	}
	var issuer string
	p, err := startProc(i.name, i.log, env, func(line string) bool {
		s, ok := strings.CutPrefix(line, "READY ")
		if ok {
			issuer = s
		}
		return ok
	}, 20*time.Second, "node", filepath.Join(idpDir(), "server.js"), i.port)
	i.proc = p
	if err != nil {
		i.t.Fatalf("start %s: %v\n%s", i.name, err, tail(i.log, 4<<10))
	}
	u, err := url.Parse(issuer)
	if err != nil {
		i.t.Fatalf("%s: READY %q: %v", i.name, issuer, err)
	}
	i.issuer, i.port = issuer, u.Port()
}

// stop ends the IdP process (SIGTERM to its group); stop on a stopped IdP is a no-op.
func (i *testIdP) stop() {
	if i.proc != nil {
		i.proc.stop()
		i.proc = nil
	}
}

// restart stops the IdP and starts it again on the same port, with the same keys,
// plus a new first signing key when rotate is set. The new process has oidc-provider's
// in-memory adapter afresh: tokens it issued before are unknown to it.
func (i *testIdP) restart(rotate bool) {
	i.t.Helper()
	issuer := i.issuer
	i.stop()
	i.start(rotate)
	if i.issuer != issuer {
		i.t.Fatalf("%s came back as %s, want %s", i.name, i.issuer, issuer)
	}
}

// sensitive lists the opaque tokens the tests minted; no saslgate log may contain
// one (TestMain's own leak check recognises only JWTs).
var sensitive struct {
	sync.Mutex
	tokens []string
}

// mintOpaque returns an opaque access token for urn:saslgate:opaque, made by
// /test/mint through the provider's AccessToken model and stored in it.
func (i *testIdP) mintOpaque(t *testing.T, sub string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"sub": sub, "resource": opaqueResource})
	resp, err := http.Post(i.issuer+"/test/mint", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || out.AccessToken == "" {
		t.Fatalf("mint opaque at %s: %s: %s", i.issuer, resp.Status, b)
	}
	sensitive.Lock()
	sensitive.tokens = append(sensitive.tokens, out.AccessToken)
	sensitive.Unlock()
	return out.AccessToken
}

// revoke revokes token at the IdP's RFC 7009 endpoint as the public client it was
// issued to, the way a mail client's "log out" would.
func (i *testIdP) revoke(t *testing.T, token string) {
	t.Helper()
	resp, err := http.PostForm(i.issuer+"/token/revocation", url.Values{
		"token":           {token},
		"token_type_hint": {"access_token"},
		"client_id":       {idpClientID},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("revocation: %s: %s", resp.Status, b)
	}
}

type idpCounts struct {
	Introspection int `json:"introspection"`
	Revocation    int `json:"revocation"`
}

// counts returns how many introspection and revocation requests the IdP has had.
func (i *testIdP) counts(t *testing.T) idpCounts {
	t.Helper()
	var c idpCounts
	if err := getJSON(i.issuer+"/test/counts", &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (i *testIdP) resetCounts(t *testing.T) {
	t.Helper()
	resp, err := http.Post(i.issuer+"/test/counts/reset", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reset counts: %s", resp.Status)
	}
}

// gateSpec is a saslgate instance owned by one test.
type gateSpec struct {
	name    string
	backend string   // IMAP backend address; default the run's Dovecot
	issuers []string // entries of tokens.issuers (jwtIssuer, introspectionIssuer)
	cache   string   // tokens.cache, flow style; default {ttl: 1m}
	limits  string   // limits, flow style; default no failure delay and 1000 connections per IP
	hmacKey string   // secrets.hmac_key_file; default the run's key, which Dovecot's passdb uses
	// login is imap.backend's login and the keys that go with it, flow style without the
	// braces; default "login: plain". A login that needs no per-user secret (master,
	// master_separator) leaves out the secrets section.
	login string
	// imap, when set, replaces the imap section's backend line (e.g. "pool: shard"), and
	// extra is appended to the file (pools, routes).
	imap, extra string
	// smtp adds an implicit-TLS submission listener (g.smtps) relaying to the run's Postfix.
	smtp bool
}

func jwtIssuer(iss string) string {
	return fmt.Sprintf(`    - issuer: %q
      mode: jwt
      audience: [%s]
      username_claim: email
      scopes: {imap: [email]}
`, iss, idpAudience)
}

// introspectionIssuer trusts iss in mode introspection, as the confidential client
// idp/server.js registers for that (its secret in a 0600 file).
func (e *env) introspectionIssuer(t *testing.T, iss string) string {
	t.Helper()
	f := filepath.Join(e.dir, "introspection.secret")
	if err := os.WriteFile(f, []byte(introspectorSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`    - issuer: %q
      mode: introspection
      client_id: %s
      client_secret_file: %q
      client_auth: client_secret_basic
      audience: [%s]
      username_claim: email
      scopes: {imap: [email]}
      timeout: 3s
`, iss, introspectorID, f, idpAudience)
}

// startTestGate runs `saslgate serve` with one implicit-TLS IMAP listener and the
// spec's tokens section. When the test ends it is stopped with SIGTERM (it must exit
// 0) and its log is checked the way TestMain checks the shared instances': no token,
// SASL response or secret in it, no data race.
func (e *env) startTestGate(t *testing.T, s gateSpec) *gate {
	t.Helper()
	if s.backend == "" {
		s.backend = e.dovecot.addr
	}
	if s.limits == "" {
		s.limits = "{skip_auth_delay: true, max_connections_per_ip: 1000}"
	}
	if s.cache == "" {
		s.cache = "{ttl: 1m}"
	}
	if s.hmacKey == "" {
		s.hmacKey = filepath.Join(e.dir, "hmac.key")
	}
	secrets := fmt.Sprintf("secrets: {source: hmac, hmac_key_file: %q}\n", s.hmacKey)
	if s.login == "" {
		s.login = "login: plain"
	} else if !strings.HasPrefix(s.login, "login: plain") && !strings.HasPrefix(s.login, "login: login") {
		secrets = ""
	}
	imapBackend := fmt.Sprintf("backend: {address: %s, tls: none, %s, timeout: 30s}", s.backend, s.login)
	if s.imap != "" {
		imapBackend = s.imap
	}
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	g := &gate{
		imaps: addr,
		conf:  filepath.Join(e.dir, s.name+".yaml"),
		log:   filepath.Join(e.dir, s.name+".log"),
	}
	smtpListener, smtpSection := "", ""
	if s.smtp {
		if e.postfix == nil {
			t.Fatal("gateSpec.smtp needs the run's Postfix (e2eGateSMTP)")
		}
		if g.smtps, err = freePort(); err != nil {
			t.Fatal(err)
		}
		_, smtpPort, _ := net.SplitHostPort(g.smtps)
		smtpListener = fmt.Sprintf("  - {name: smtps, protocol: smtp, address: %s, tls: implicit, public_host: 127.0.0.1, public_port: %s}\n", g.smtps, smtpPort)
		smtpSection = fmt.Sprintf("smtp:\n  backend: {address: %s, tls: none, %s, timeout: 30s, hostname: saslgate.e2e.test}\n", e.postfix.addr, s.login)
	}
	// The run's certificate, key and HMAC key, as TestMain wrote them (main_test.go,
	// saslgate_test.go), and the binary it built. The backend timeout is long: 200
	// simultaneous Dovecot logins on a busy machine take a while.
	conf := fmt.Sprintf(`# generated by saslgate e2e for %[1]s
log: {level: debug, format: text}
tls: {cert_file: %[2]q, key_file: %[3]q}
listeners:
  - name: imaps
    protocol: imap
    address: %[4]s
    tls: implicit
    public_host: 127.0.0.1
    public_port: %[5]s
%[12]simap:
  %[6]s
  allow_token_as_login_password: false
  preauth_timeout: 30s
  error_reply_timeout: 1s
%[13]s%[7]slimits: %[10]s
tokens:
  issuers:
%[8]s  cache: %[9]s
%[11]s`, t.Name(), e.certFile, filepath.Join(e.dir, "key.pem"), addr, port, imapBackend,
		secrets, strings.Join(s.issuers, ""), s.cache, s.limits, s.extra, smtpListener, smtpSection)
	if err := os.WriteFile(g.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	g.proc, err = startProc(s.name, g.log, nil, nil, 0, filepath.Join(e.dir, "saslgate"), "serve", "--config", g.conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.proc.stop()
		if g.proc.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", s.name, g.proc.err)
		}
		e.checkTestGateLog(t, g.log)
		if t.Failed() {
			t.Logf("----- %s (tail) -----\n%s", filepath.Base(g.log), tail(g.log, 8<<10))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := waitPort(ctx, g.imaps, g.proc); err != nil {
		t.Fatalf("%v\n%s\n%s", err, conf, tail(g.log, 4<<10))
	}
	return g
}

func (e *env) checkTestGateLog(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	log := string(b)
	needles := map[string]string{
		"eyJhbGciOi":       "a JWT",
		"bixhPWFsaWNl":     "a base64 OAUTHBEARER client response",
		introspectorSecret: "the introspection client secret",
		backends.DeriveSecret(e.hmacKey, mailUser).Reveal(): "alice's backend secret",
	}
	sensitive.Lock()
	for _, tok := range sensitive.tokens {
		needles[tok] = "an opaque access token"
	}
	sensitive.Unlock()
	for needle, what := range needles {
		if i := strings.Index(log, needle); i >= 0 {
			start := strings.LastIndexByte(log[:i], '\n') + 1
			end := strings.IndexByte(log[i:], '\n')
			if end < 0 {
				end = len(log) - i
			}
			t.Errorf("%s logs %s: %.300s", filepath.Base(path), what, log[start:i+end])
		}
	}
	if strings.Contains(log, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", filepath.Base(path), log)
	}
}

// Logins through a test gate, each one a logged transcript.

// loginOK authenticates alice with token and logs out.
func (e *env) loginOK(t *testing.T, g *gate, token string) {
	t.Helper()
	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	e.login(t, w, "a", token)
	w.send("b LOGOUT")
	w.expectTagged("b", "OK")
}

// loginRefused expects the OAUTHBEARER error challenge (invalid_token) and then
// NO [AUTHENTICATIONFAILED].
func (e *env) loginRefused(t *testing.T, g *gate, token string) {
	t.Helper()
	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	authFails(t, w, "OAUTHBEARER", oauthBearerIR(mailUser, "", 0, token), "invalid_token", "AQ==")
}

// loginUnavailable expects NO [UNAVAILABLE] at once, without an error challenge.
func (e *env) loginUnavailable(t *testing.T, g *gate, token string) {
	t.Helper()
	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	w.send("a AUTHENTICATE OAUTHBEARER " + oauthBearerIR(mailUser, "", 0, token))
	w.expectTagged("a", "NO [UNAVAILABLE]")
}
