package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Open sign-in (issue 18, the client side): `saslgate login alice@example.com` against
// oidc-provider with dynamic client registration and a resource indicator for the gateway.
// The domain's web documents (autoconfig, WebFinger, RFC 9728) come from a test server that
// `saslgate login --discovery-base` reaches for every host of the domain; the mail server is a
// saslgate gate whose issuer accepts the resource as audience. The test is the user's browser.

// openResource is the resource the discovered mail server (public host 127.0.0.1) stands
// for: saslgate's http.resource form, https and the host name.
const openResource = "https://127.0.0.1"

// otherResource is another resource the IdP issues tokens for: not the gateway's.
const otherResource = "https://other.example"

// startOpenIdP starts idp/server.js with its issue #18 block on: registration as given
// ("open", "token") and openResource as an extra resource.
func (e *env) startOpenIdP(t *testing.T, name, registration string) *openIdP {
	t.Helper()
	i := &openIdP{t: t, name: name, registration: registration, port: "0",
		log: filepath.Join(e.dir, name+".log"), keys: filepath.Join(e.dir, name+".jwks.json")}
	t.Cleanup(func() {
		i.proc.stop()
		if t.Failed() {
			t.Logf("----- %s (tail) -----\n%s", name, tail(i.log, 4<<10))
		}
	})
	i.start()
	return i
}

// openIdP is an oidc-provider with registration that can be restarted on its port with its
// keys (and, like any restart of oidc-provider's in-memory store, without its clients).
type openIdP struct {
	idp
	t                                   *testing.T
	name, registration, port, log, keys string
}

func (i *openIdP) start() {
	i.t.Helper()
	env := []string{"IDP_REGISTRATION=" + i.registration, "IDP_RESOURCES=" + openResource + "," + otherResource, "IDP_KEYS_FILE=" + i.keys}
	p, err := startProc(i.name, i.log, env, func(line string) bool {
		s, ok := strings.CutPrefix(line, "READY ")
		if ok {
			i.issuer = s
		}
		return ok
	}, 20*time.Second, "node", filepath.Join(idpDir(), "server.js"), i.port)
	i.proc = p
	if err != nil {
		i.t.Fatalf("%v\n%s", err, tail(i.log, 4<<10))
	}
	u, _ := url.Parse(i.issuer)
	i.port = u.Port()
}

func (i *openIdP) restart() {
	i.t.Helper()
	issuer := i.issuer
	i.proc.stop()
	i.start()
	if i.issuer != issuer {
		i.t.Fatalf("%s came back as %s, want %s", i.name, i.issuer, issuer)
	}
}

// openIssuer trusts iss under the policy README documents for self-registered clients: a
// token for the gateway's resource (RFC 8707) from any client, counted by its scopes.
func openIssuer(iss string) string {
	return fmt.Sprintf(`    - issuer: %q
      mode: jwt
      resources: {imap: [%q]}
      allow_any_client_id: true
      username_claim: email
      scopes: {imap: [email]}
`, iss, openResource)
}

// mailDomain is example.com's web presence: documents by "host path".
type mailDomain struct {
	srv  *httptest.Server
	mu   sync.Mutex
	docs map[string]string
}

func newMailDomain(t *testing.T) *mailDomain {
	d := &mailDomain{docs: map[string]string{}}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		body, ok := d.docs[r.Host+" "+r.URL.Path]
		d.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(d.srv.Close)
	return d
}

// set serves body at key ("host path").
func (d *mailDomain) set(key, body string) {
	d.mu.Lock()
	d.docs[key] = body
	d.mu.Unlock()
}

func (d *mailDomain) autoconfig(g *gate, issuer string) {
	_, port, _ := net.SplitHostPort(g.imaps)
	d.set("autoconfig.example.com /mail/config-v1.1.xml", fmt.Sprintf(`<?xml version="1.0"?>
<clientConfig version="1.1">
  <emailProvider id="example.com">
    <domain>example.com</domain>
    <incomingServer type="imap">
      <hostname>127.0.0.1</hostname>
      <port>%s</port>
      <socketType>SSL</socketType>
      <authentication>OAuth2</authentication>
      <username>%%EMAILADDRESS%%</username>
    </incomingServer>
  </emailProvider>
  <oAuth2>
    <issuer>%s</issuer>
    <scope>openid email offline_access</scope>
  </oAuth2>
</clientConfig>`, port, issuer))
}

func (d *mailDomain) webfinger(issuer string) {
	d.set("example.com /.well-known/webfinger", fmt.Sprintf(`{"subject":"acct:%s","links":[{"rel":"http://openid.net/specs/connect/1.0/issuer","href":%q}]}`, mailUser, issuer))
}

func (d *mailDomain) protectedResource(issuer string) {
	d.set("127.0.0.1 /.well-known/oauth-protected-resource", fmt.Sprintf(`{"resource":%q,"authorization_servers":[%q],"scopes_supported":["email"]}`, openResource, issuer))
}

// openLogin is one run of `saslgate login`, its standard error kept whole and line by line.
type openLogin struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	lines  chan string
	mu     sync.Mutex
	stderr []string
	done   chan error
}

func (e *env) runOpenLogin(t *testing.T, args ...string) *openLogin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	r := &openLogin{lines: make(chan string, 200), done: make(chan error, 1)}
	r.cmd = exec.CommandContext(ctx, filepath.Join(e.dir, "saslgate"), append([]string{"login"}, args...)...)
	r.cmd.Stdout = &r.stdout
	pipe, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			r.mu.Lock()
			r.stderr = append(r.stderr, sc.Text())
			r.mu.Unlock()
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.done <- r.cmd.Wait()
	}()
	return r
}

// signInURL waits for the code flow's URL on standard error.
func (r *openLogin) signInURL(t *testing.T) string {
	t.Helper()
	timeout := time.After(45 * time.Second)
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				t.Fatalf("saslgate login ended without a sign-in URL: %v\n%s", <-r.done, r.log())
			}
			if m := codeFlowURL.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no sign-in URL:\n%s", r.log())
		}
	}
}

// wait returns the command's error once it has ended.
func (r *openLogin) wait() error {
	go func() {
		for range r.lines {
		}
	}()
	return <-r.done
}

func (r *openLogin) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.stderr, "\n")
}

// signIn runs saslgate login with args while the test, as alice's browser, goes through
// oidc-provider's forms; then returns the token printed.
func (e *env) signIn(t *testing.T, args ...string) (token, stderr string) {
	t.Helper()
	r := e.runOpenLogin(t, args...)
	page, err := submitForms(browser(), r.signInURL(t), url.Values{"login": {"alice"}, "password": {"any"}})
	if err != nil {
		t.Fatalf("browser: %v\n%s", err, r.log())
	}
	if !strings.Contains(page, "Signed in.") {
		t.Errorf("last page: %.500s", page)
	}
	if err := r.wait(); err != nil {
		t.Fatalf("saslgate login: %v\n%s", err, r.log())
	}
	t.Logf("saslgate login stderr:\n%s", r.log())
	return strings.TrimSpace(r.stdout.String()), r.log()
}

// opensIMAP checks that tok lists alice's mailboxes through g with curl.
func (e *env) opensIMAP(t *testing.T, g *gate, tok string) {
	t.Helper()
	out, err := runCmd(t, "", "curl", e.curlArgs(tok, "imaps://"+g.imaps+"/")...)
	if err != nil || !strings.Contains(out, "INBOX") {
		t.Errorf("curl through the gate with the login's token: %v\n%s", err, out)
	}
}

func wantLog(t *testing.T, log string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("saslgate login's standard error lacks %q", w)
		}
	}
}

func TestOpenLoginFromAddress(t *testing.T) {
	e := e2e(t)
	op := e.startOpenIdP(t, "idp-open-login", "open")
	g := e.startTestGate(t, gateSpec{name: "saslgate-open-login", issuers: []string{openIssuer(op.issuer)}})
	d := newMailDomain(t)
	d.autoconfig(g, op.issuer)
	d.protectedResource(op.issuer)
	file := filepath.Join(e.dir, "open-login", "alice.json")
	args := []string{mailUser, "--discovery-base", d.srv.URL, "--flow", "code", "--token-file", file, "--ca-file", e.certFile}

	tok, log := e.signIn(t, args...)
	wantLog(t, log,
		"discover: autoconfig: found servers with OAuth: imaps://"+g.imaps,
		"discover: autoconfig: oAuth2: issuer "+op.issuer,
		"discover: RFC 9728: resource "+openResource,
		"saslgate login: registered the client ",
	)
	_, claims, err := jwtParts(tok)
	if err != nil || claims["aud"] != openResource || claims["email"] != mailUser {
		t.Errorf("token claims %v, %v; want aud %s (RFC 8707) and alice's email", claims, err, openResource)
	}
	e.opensIMAP(t, g, tok)

	// The same client's token for another resource is refused by the gateway.
	other, _ := e.signIn(t, append(append([]string(nil), args...), "--resource", otherResource, "--token-file", filepath.Join(e.dir, "open-login", "other.json"))...)
	if _, claims, err := jwtParts(other); err != nil || claims["aud"] != otherResource {
		t.Fatalf("token for %s: claims %v, %v", otherResource, claims, err)
	}
	e.loginRefused(t, g, other)

	// A site that keeps a closed list of clients refuses the registered client's token
	// for its own resource: acceptance comes from allow_any_client_id, not from the resource.
	closed := e.startTestGate(t, gateSpec{name: "saslgate-open-closed", issuers: []string{strings.Replace(openIssuer(op.issuer),
		"allow_any_client_id: true", "allowed_client_ids: [saslgate-e2e]", 1)}})
	e.loginRefused(t, closed, tok)
	waitLog(t, closed.log, "not allowed")

	for _, f := range []string{file, strings.TrimSuffix(file, ".json") + ".client.json"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", f, fi, err)
		}
	}

	// The configuration for curl, run as printed: its token command refreshes on its own.
	r := e.saslgateTool(t, "", append([]string{"login"}, append(args, "--print-config", "curl")...)...)
	if r.code != 0 || strings.Contains(r.stderr, "registered the client") {
		t.Fatalf("--print-config curl: exit %d (a second registration?)", r.code)
	}
	var imapLine string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "curl ") && strings.Contains(l, "imaps://") {
			imapLine = l
		}
	}
	if imapLine == "" {
		t.Fatalf("no IMAP curl command in:\n%s", r.stdout)
	}
	out, err := runCmd(t, "", "sh", "-c", imapLine)
	if err != nil || !strings.Contains(out, "INBOX") {
		t.Errorf("the printed curl command: %v\n%s", err, out)
	}

	// The token command alone, as mail clients run it, then a refresh by the registered client.
	r = e.saslgateTool(t, "", "login", "--token-file", file, "--non-interactive", "--min-validity", "2h")
	if refreshed := strings.TrimSpace(r.stdout); r.code != 0 || refreshed == "" || refreshed == tok {
		t.Fatalf("refresh: exit %d", r.code)
	} else {
		e.opensIMAP(t, g, refreshed)
	}
}

func TestOpenLoginEachDiscoveryStep(t *testing.T) {
	e := e2e(t)
	op := e.startOpenIdP(t, "idp-open-steps", "open")
	g := e.startTestGate(t, gateSpec{name: "saslgate-open-steps", issuers: []string{openIssuer(op.issuer)}})
	for _, tc := range []struct {
		name   string
		setup  func(d *mailDomain)
		server bool // give the mail server with --server
		found  []string
	}{
		{"autoconfig only", func(d *mailDomain) { d.autoconfig(g, op.issuer) }, false,
			[]string{"discover: autoconfig: oAuth2: issuer " + op.issuer, "discover: result: resource " + openResource + " (derived from the mail server's host name)"}},
		{"WebFinger only", func(d *mailDomain) { d.webfinger(op.issuer) }, true,
			[]string{"discover: WebFinger: issuer " + op.issuer, "discover: result: issuer " + op.issuer + " (from WebFinger)"}},
		{"RFC 9728 only", func(d *mailDomain) { d.protectedResource(op.issuer) }, true,
			[]string{"discover: RFC 9728: resource " + openResource + ", authorization servers " + op.issuer, "(from RFC 9728)"}},
		{"SASL probe only", func(*mailDomain) {}, true,
			[]string{"discover: SASL: probing imaps://" + g.imaps, "discover: SASL: openid-configuration " + op.issuer + "/.well-known/openid-configuration names issuer " + op.issuer}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newMailDomain(t)
			tc.setup(d)
			args := []string{mailUser, "--discovery-base", d.srv.URL, "--flow", "code", "--ca-file", e.certFile,
				"--token-file", filepath.Join(e.dir, "open-steps", strings.ReplaceAll(tc.name, " ", "-")+".json")}
			if tc.server {
				args = append(args, "--server", "imaps://"+g.imaps)
			}
			tok, log := e.signIn(t, args...)
			wantLog(t, log, tc.found...)
			e.opensIMAP(t, g, tok)
		})
	}
}

// failedLogin checks a login that must fail with want on standard error and leave no token
// file behind.
func (e *env) failedLogin(t *testing.T, file string, r toolsResult, want ...string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("saslgate login succeeded")
	}
	wantLog(t, r.stderr, want...)
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file %s: %v; want none", file, err)
	}
}

func TestOpenLoginWithoutRegistration(t *testing.T) {
	e := e2e(t)
	d := newMailDomain(t)
	d.webfinger(e.idp.issuer) // the run's IdP: no registration endpoint
	file := filepath.Join(e.dir, "open-noreg", "alice.json")
	r := e.saslgateTool(t, "", "login", mailUser, "--discovery-base", d.srv.URL, "--token-file", file)
	e.failedLogin(t, file, r, "no client ID and no dynamic client registration: "+e.idp.issuer+" publishes no registration_endpoint (RFC 7591)", "--client-id")
	if _, err := os.Stat(filepath.Dir(file)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token directory: %v; want none", err)
	}
}

func TestOpenLoginRegistrationRefused(t *testing.T) {
	e := e2e(t)
	op := e.startOpenIdP(t, "idp-open-refusing", "token")
	d := newMailDomain(t)
	d.webfinger(op.issuer)
	file := filepath.Join(e.dir, "open-refused", "alice.json")
	r := e.saslgateTool(t, "", "login", mailUser, "--discovery-base", d.srv.URL, "--token-file", file)
	e.failedLogin(t, file, r, "the issuer refused the client registration: HTTP 4")
	if _, err := os.Stat(strings.TrimSuffix(file, ".json") + ".client.json"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registration file: %v; want none", err)
	}
}

var issParam = regexp.MustCompile(`([?&]iss=)[^&]*`)

func TestOpenLoginIssuerMixUp(t *testing.T) {
	e := e2e(t)
	op := e.startOpenIdP(t, "idp-open-mixup", "open")
	d := newMailDomain(t)
	d.webfinger(op.issuer)
	file := filepath.Join(e.dir, "open-mixup", "alice.json")
	r := e.runOpenLogin(t, mailUser, "--discovery-base", d.srv.URL, "--flow", "code", "--token-file", file)
	// A browser that brings back an authorization response naming another issuer (RFC 9207
	// §2.4's mix-up): the redirect to the loopback listener has its iss replaced.
	b := browser()
	rewritten := false
	b.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Hostname() == "127.0.0.1" && strings.Contains(req.URL.RawQuery, "code=") && req.URL.Query().Get("iss") == op.issuer {
			req.URL.RawQuery = issParam.ReplaceAllString(req.URL.RawQuery, "${1}"+url.QueryEscape("https://evil.example"))
			rewritten = true
		}
		return nil
	}
	page, err := submitForms(b, r.signInURL(t), url.Values{"login": {"alice"}, "password": {"any"}})
	if err != nil {
		t.Fatal(err)
	}
	if !rewritten || !strings.Contains(page, "Sign-in failed") {
		t.Errorf("iss rewritten %v; last page %.300s", rewritten, page)
	}
	if err := r.wait(); err == nil {
		t.Error("saslgate login succeeded")
	}
	wantLog(t, r.log(), `the authorization response comes from issuer "https://evil.example", not "`+op.issuer+`" (RFC 9207`)
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file: %v; want none", err)
	}
}

func TestOpenLoginDeviceGrant(t *testing.T) {
	e := e2e(t)
	op := e.startOpenIdP(t, "idp-open-device", "open")
	g := e.startTestGate(t, gateSpec{name: "saslgate-open-device", issuers: []string{openIssuer(op.issuer)}})
	d := newMailDomain(t)
	d.autoconfig(g, op.issuer)
	file := filepath.Join(e.dir, "open-device", "alice.json")
	// No --flow: the device grant, which the issuer offers and the registration asked for.
	run := e.startLogin(t, mailUser, "--discovery-base", d.srv.URL, "--token-file", file)
	m := run.expect(t, deviceInstructions)
	page, err := submitForms(browser(), m[1], url.Values{"user_code": {m[2]}, "login": {"alice"}, "password": {"any"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, "Sign-in Success") {
		t.Errorf("last page of the device sign-in: %.500s", page)
	}
	tok := run.token(t)
	if _, claims, err := jwtParts(tok); err != nil || claims["aud"] != openResource {
		t.Errorf("token claims %v, %v; want aud %s", claims, err, openResource)
	}
	e.opensIMAP(t, g, tok)
}

func TestOpenLoginForgottenRegistration(t *testing.T) {
	e := e2e(t)
	op := e.startOpenIdP(t, "idp-open-forgetful", "open")
	g := e.startTestGate(t, gateSpec{name: "saslgate-open-forgetful", issuers: []string{openIssuer(op.issuer)}})
	d := newMailDomain(t)
	d.autoconfig(g, op.issuer)
	file := filepath.Join(e.dir, "open-forgetful", "alice.json")
	regFile := strings.TrimSuffix(file, ".json") + ".client.json"
	args := []string{mailUser, "--discovery-base", d.srv.URL, "--flow", "code", "--token-file", file}
	e.signIn(t, args...)
	first, err := os.ReadFile(regFile)
	if err != nil {
		t.Fatal(err)
	}
	// The issuer loses its clients and grants: the refresh is refused (invalid_client), the
	// registration is replaced once, and alice signs in again with the new client.
	op.restart()
	tok, log := e.signIn(t, append(args, "--min-validity", "2h")...)
	wantLog(t, log, "no longer knows the registered client", "saslgate login: registered the client ")
	if second, _ := os.ReadFile(regFile); string(second) == string(first) {
		t.Error("the registration file was not replaced")
	}
	e.opensIMAP(t, g, tok)
}

// TestOpenLoginMsmtpConfig: a site whose autoconfig document names its client (so no
// registration) and the gateway's IMAP and SMTP listeners; the msmtp configuration
// `saslgate login --print-config msmtp` prints sends mail through saslgate as printed.
func TestOpenLoginMsmtpConfig(t *testing.T) {
	e := e2eGateSMTP(t)
	d := newMailDomain(t)
	imapHost, imapPort, _ := net.SplitHostPort(e.gate.imaps)
	smtpHost, smtpPort, _ := net.SplitHostPort(e.gate.smtps)
	d.set("autoconfig.example.com /mail/config-v1.1.xml", fmt.Sprintf(`<clientConfig version="1.1"><emailProvider id="example.com"><domain>example.com</domain>
<incomingServer type="imap"><hostname>%s</hostname><port>%s</port><socketType>SSL</socketType><authentication>OAuth2</authentication><username>%%EMAILADDRESS%%</username></incomingServer>
<outgoingServer type="smtp"><hostname>%s</hostname><port>%s</port><socketType>SSL</socketType><authentication>OAuth2</authentication><username>%%EMAILADDRESS%%</username></outgoingServer>
</emailProvider><oAuth2><issuer>%s</issuer><scope>openid email imap smtp offline_access</scope><clientID>%s</clientID></oAuth2></clientConfig>`,
		imapHost, imapPort, smtpHost, smtpPort, e.idp.issuer, idpClientID))
	file := filepath.Join(e.dir, "open-msmtp", "alice.json")
	// The run's IdP issues tokens for urn:saslgate, the resource its gateway takes.
	conf, log := e.signIn(t, mailUser, "--discovery-base", d.srv.URL, "--flow", "code", "--resource", idpResource,
		"--ca-file", e.certFile, "--token-file", file, "--print-config", "msmtp")
	wantLog(t, log, "client ID "+idpClientID)
	if strings.Contains(log, "registered the client") {
		t.Error("registered a client although the autoconfig document names one")
	}
	rc := filepath.Join(t.TempDir(), "msmtprc")
	writeFile0600(t, rc, conf+"\n")
	t.Logf("printed msmtp configuration:\n%s", conf)
	msgID, msg := testMessage("msmtp as printed by saslgate login")
	if _, err := runCmd(t, msg, "msmtp", "-C", rc, "--debug", mailRcpt); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)
}

// TestOpenLoginFromGateway: the discovery documents come from saslgate's own HTTP listener
// (autoconfig with the oAuth2 element, RFC 9728 for its resource), as at a site fronted by
// saslgate with IMAP and SMTP submission. From alice's address alone, `saslgate login`
// registers a client and signs in; its token opens IMAP and submits mail through the same
// gate (curl), and the msmtp, mutt and neomutt configurations it prints work as printed,
// each running `saslgate login` as its token command with the registered client.
func TestOpenLoginFromGateway(t *testing.T) {
	e := e2eGateSMTP(t)
	op := e.startOpenIdP(t, "idp-open-gateway", "open")
	httpAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-open-gateway",
		issuers: []string{openMailIssuer(op.issuer)},
		smtp:    true,
		extra:   fmt.Sprintf("http: {address: %q, domains: [example.com], resource: %q}\n", httpAddr, openResource),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitPort(ctx, httpAddr, nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(e.dir, "open-gateway", "alice.json")
	args := []string{mailUser, "--discovery-base", "http://" + httpAddr, "--flow", "code", "--token-file", file, "--ca-file", e.certFile}
	tok, log := e.signIn(t, args...)
	wantLog(t, log,
		"discover: autoconfig: found servers with OAuth: imaps://"+g.imaps+" submissions://"+g.smtps,
		"discover: autoconfig: oAuth2: issuer ",
		"discover: RFC 9728: resource "+openResource+", authorization servers "+op.issuer,
		"discover: result: issuer "+op.issuer+" (from autoconfig)",
		"saslgate login: registered the client ",
	)
	_, claims, err := jwtParts(tok)
	if err != nil || claims["aud"] != openResource {
		t.Errorf("token claims %v, %v; want aud %s", claims, err, openResource)
	}
	if scope, _ := claims["scope"].(string); !slices.Contains(strings.Fields(scope), "smtp") {
		t.Errorf("token scope %q: want the smtp scope the gateway's autoconfig asks for", scope)
	}
	e.opensIMAP(t, g, tok)

	// SMTP submission with the registered client's token, through the gate to Postfix.
	msgID, msg := testMessage("curl with a registered client's token")
	eml := filepath.Join(t.TempDir(), "msg.eml")
	writeFile0600(t, eml, msg)
	if _, err := runCmd(t, "", "curl", e.curlArgs(tok, "--mail-from", mailFrom, "--mail-rcpt", mailRcpt,
		"--upload-file", eml, "smtps://"+g.smtps)...); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)

	printed := func(client string) string {
		r := e.saslgateTool(t, "", append([]string{"login"}, append(args, "--print-config", client)...)...)
		if r.code != 0 || strings.Contains(r.stderr, "registered the client") {
			t.Fatalf("--print-config %s: exit %d (a second registration?)\n%s", client, r.code, r.stderr)
		}
		t.Logf("printed %s configuration:\n%s", client, r.stdout)
		return r.stdout
	}

	rc := filepath.Join(t.TempDir(), "msmtprc")
	writeFile0600(t, rc, printed("msmtp"))
	msgID, msg = testMessage("msmtp as printed for a registered client")
	if _, err := runCmd(t, msg, "msmtp", "-C", rc, mailRcpt); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)

	// mutt in batch mode: the message goes out over the printed smtp_url, and its copy
	// (Fcc, the test's record setting) goes to alice's "mutt" folder over the printed IMAP
	// server (not her INBOX, whose one message the IMAP tests count),
	// so both logins run the printed token command. (Debian 12's NeoMutt 20220429 refuses
	// the IdP's 1.1 KB token for SMTP, "OAUTH token is too big: 1024"; the printed
	// configuration says so.)
	for _, client := range []string{"mutt"} {
		t.Run(client, func(t *testing.T) {
			home := t.TempDir()
			rc := filepath.Join(home, "muttrc")
			writeFile0600(t, rc, printed(client))
			msgID, _ := testMessage(client + " as printed")
			alice := e.grantToken(t, "alice")
			if _, err := e.searchMailbox(t, mailFrom, alice, client, "<none>", 0); err != nil {
				t.Fatal(err)
			}
			draft := filepath.Join(home, "draft")
			writeFile0600(t, draft, "To: "+mailRcpt+"\nSubject: "+client+" as printed\nMessage-ID: "+msgID+"\n\nSent by "+client+" through saslgate.\n")
			cmd := exec.Command(client, "-n", "-F", rc, "-e", "set record = +"+client, "-H", draft)
			cmd.Env = append(os.Environ(), "HOME="+home, "TMPDIR="+home, "TERM=dumb")
			cmd.Stdin = strings.NewReader("Sent by " + client + " through saslgate.\n")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", client, err, out)
			}
			got := e.fetchDelivered(t, msgID)
			if !strings.Contains(got, "(Authenticated sender: "+mailFrom+")") {
				t.Errorf("%s's message at bob's lacks alice's SASL login in Received:\n%s", client, got)
			}
			if body, err := e.searchMailbox(t, mailFrom, alice, client, msgID, 20*time.Second); err != nil || body == "" {
				t.Errorf("%s's copy not in alice's %s folder (its IMAP login through the gate): %v", client, client, err)
			}
		})
	}
}

// openMailIssuer is openIssuer for a gateway with IMAP and SMTP submission: the same
// resource for both, the smtp scope for submission.
func openMailIssuer(iss string) string {
	return fmt.Sprintf(`    - issuer: %q
      mode: jwt
      resources: {imap: [%[2]q], smtp: [%[2]q]}
      allow_any_client_id: true
      username_claim: email
      scopes: {imap: [email], smtp: [smtp]}
`, iss, openResource)
}
