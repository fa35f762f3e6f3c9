package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// `saslgate login` against oidc-provider: the test runs the command and acts as the user
// in a browser (a Go http.Client with a cookie jar going through devInteractions' forms).

var (
	formTag   = regexp.MustCompile(`(?s)<form\b([^>]*)>(.*?)</form>`)
	inputTag  = regexp.MustCompile(`<input\b[^>]*>`)
	attrValue = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

// browser is the user's browser: cookies kept, redirects followed (also to saslgate
// login's loopback listener).
func browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 15 * time.Second}
}

// submitForms starts at u and keeps submitting the page's first form, with its hidden inputs
// and those of fields the form has an input for, until a page has no form. It returns that
// last page.
func submitForms(c *http.Client, u string, fields url.Values) (string, error) {
	page, err := fetchPage(c, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	for range 8 {
		m := formTag.FindStringSubmatch(page)
		if m == nil {
			return page, nil
		}
		attrs := map[string]string{}
		for _, a := range attrValue.FindAllStringSubmatch(m[1], -1) {
			attrs[a[1]] = html.UnescapeString(a[2])
		}
		form := url.Values{}
		for _, in := range inputTag.FindAllString(m[2], -1) {
			ia := map[string]string{}
			for _, a := range attrValue.FindAllStringSubmatch(in, -1) {
				ia[a[1]] = html.UnescapeString(a[2])
			}
			name := ia["name"]
			switch {
			case name == "":
			case fields.Has(name):
				form.Set(name, fields.Get(name))
			case ia["type"] == "hidden":
				form.Set(name, ia["value"])
			}
		}
		base, _ := url.Parse(u)
		action, err := url.Parse(attrs["action"])
		if err != nil {
			return "", err
		}
		u = base.ResolveReference(action).String()
		if page, err = fetchPage(c, http.MethodPost, u, form); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("still a form after 8 submissions: %.300s", page)
}

// loginRun is a running `saslgate login` whose standard error is read line by line.
type loginRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	lines  chan string
	done   chan error
}

func (e *env) startLogin(t *testing.T, args ...string) *loginRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	r := &loginRun{lines: make(chan string, 100), done: make(chan error, 1)}
	r.cmd = exec.CommandContext(ctx, filepath.Join(e.dir, "saslgate"), append([]string{"login"}, args...)...)
	r.cmd.Stdout = &r.stdout
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.done <- r.cmd.Wait()
	}()
	return r
}

// expect returns the first stderr line matching re (its submatches), within the timeout.
func (r *loginRun) expect(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				t.Fatalf("saslgate login ended without a line matching %v: %v", re, <-r.done)
			}
			t.Logf("login stderr: %s", line)
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no line matching %v", re)
		}
	}
}

// token waits for the command and returns the access token it printed.
func (r *loginRun) token(t *testing.T) string {
	t.Helper()
	go func() {
		for range r.lines {
		}
	}()
	if err := <-r.done; err != nil {
		t.Fatalf("saslgate login: %v", err)
	}
	return strings.TrimSpace(r.stdout.String())
}

var (
	deviceInstructions = regexp.MustCompile(`^To sign in, open (\S+) and enter the code (\S+)$`)
	codeFlowURL        = regexp.MustCompile(`^(http://\S+/auth\?\S+)$`)
)

// acceptedToken checks through `saslgate token verify` that the gateway takes tok as alice's.
func (e *env) acceptedToken(t *testing.T, conf, tok string) {
	t.Helper()
	r := e.saslgateTool(t, tok, "token", "verify", "--config", conf, "-")
	if r.code != 0 || !strings.Contains(r.stdout, "user "+mailUser) {
		t.Errorf("the gateway does not accept the login's token for %s (exit %d)", mailUser, r.code)
	}
}

func TestLoginDeviceGrant(t *testing.T) {
	e := e2e(t)
	conf := e.toolsConfig(t, toolsConfigSpec{name: "login"})
	file := filepath.Join(e.dir, "login-device", "alice.json")
	args := []string{"--issuer", e.idp.issuer, "--client-id", idpClientID, "--resource", idpResource,
		"--scope", "openid email imap smtp offline_access", "--token-file", file}

	run := e.startLogin(t, args...)
	m := run.expect(t, deviceInstructions)
	// The user, elsewhere: open the verification URI, enter the code, log in, consent.
	page, err := submitForms(browser(), m[1], url.Values{"user_code": {m[2]}, "login": {"alice"}, "password": {"any"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, "Sign-in Success") {
		t.Errorf("last page of the device sign-in: %.500s", page)
	}
	first := run.token(t)
	e.acceptedToken(t, conf, first)

	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", fi, err)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), `"refresh_token"`) {
		t.Fatal("no refresh token kept")
	}

	// Later calls, as a mail client makes them: only the token file; the stored token while
	// it stays valid, then a refreshed one, without the user.
	r := e.saslgateTool(t, "", "login", "--token-file", file, "--non-interactive")
	if r.code != 0 || strings.TrimSpace(r.stdout) != first {
		t.Errorf("second call: exit %d; want the stored token again", r.code)
	}
	r = e.saslgateTool(t, "", "login", "--token-file", file, "--non-interactive", "--min-validity", "2h")
	refreshed := strings.TrimSpace(r.stdout)
	if r.code != 0 || refreshed == "" || refreshed == first {
		t.Fatalf("refresh: exit %d; want a new token", r.code)
	}
	e.acceptedToken(t, conf, refreshed)

	// The token works with a real client through saslgate.
	out, err := runCmd(t, "", "curl", e.curlArgs(refreshed, "imaps://"+e.gate.imaps+"/")...)
	if err != nil || !strings.Contains(out, "INBOX") {
		t.Errorf("curl with the refreshed token: %v\n%s", err, out)
	}

	// A token file others can read is refused.
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.saslgateTool(t, "", "login", "--token-file", file); r.code != 1 || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("world-readable token file: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestLoginAuthorizationCode(t *testing.T) {
	e := e2e(t)
	conf := e.toolsConfig(t, toolsConfigSpec{name: "login-code"})
	file := filepath.Join(e.dir, "login-code.json")
	// The issuer comes from the gateway's config.
	run := e.startLogin(t, "--config", conf, "--flow", "code", "--client-id", idpClientID, "--resource", idpResource,
		"--scope", "openid email imap smtp offline_access", "--token-file", file)
	m := run.expect(t, codeFlowURL)
	// The browser follows the issuer's final redirect to saslgate login's loopback listener.
	page, err := submitForms(browser(), m[1], url.Values{"login": {"alice"}, "password": {"any"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, "Signed in.") {
		t.Errorf("last page: %.500s", page)
	}
	tok := run.token(t)
	e.acceptedToken(t, conf, tok)
	u, _ := url.Parse(m[1])
	if ru := u.Query().Get("redirect_uri"); !strings.HasPrefix(ru, "http://127.0.0.1:") || u.Query().Get("code_challenge_method") != "S256" {
		t.Errorf("authorization request: redirect_uri %q, code_challenge_method %q", ru, u.Query().Get("code_challenge_method"))
	}
}
