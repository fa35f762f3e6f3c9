package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/demoissuer"
)

var timeLeft = regexp.MustCompile(`\(in ([0-9hms]+)\)`)

// anHourLeft writes "(in 59m59s)" as "(in 1h0m0s)": the second the test took to get there is
// not what it checks.
func anHourLeft(s string) string {
	return timeLeft.ReplaceAllStringFunc(s, func(m string) string {
		d, err := time.ParseDuration(timeLeft.FindStringSubmatch(m)[1])
		if err != nil || d <= time.Hour-time.Minute || d > time.Hour {
			return m
		}
		return "(in 1h0m0s)"
	})
}

// `saslgate token verify` judges a token as the listeners would, protocol by protocol:
// here IMAP needs no scope and SMTP needs mail.send.
func TestTokenVerify(t *testing.T) {
	e := newMailEnv(t)
	iss, kid := e.issuer.URL(), e.issuer.KeyID()
	e.Issuer = fmt.Sprintf("{issuer: %q, audience: [saslgate], username_claim: sub, scopes: {smtp: [mail.send]}}", iss)
	path := e.config(t)

	exp := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	past := exp.Add(-2 * time.Hour)
	mint := func(aud, scope string, exp time.Time) string {
		t.Helper()
		tok, err := e.issuer.Mint(demoissuer.Claims{Subject: "alice", Audience: []string{aud}, Scope: scope, Extra: map[string]any{"exp": exp.Unix()}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokenLine := func(aud, scope string, exp time.Time) string {
		return "OK   token     JWT alg=RS256 kid=" + kid + " typ=at+jwt; unverified claims: iss=" + iss +
			` sub=alice aud="` + aud + `" client_id=saslgate-demo scope="` + scope + `" exp=` + exp.Format(time.RFC3339)
	}
	accepted := func(scope string) string {
		return `accepted for user alice (issuer ` + iss + `, client saslgate-demo, scopes "` + scope + `", expires ` + exp.Format(time.RFC3339) + " (in 1h0m0s))"
	}
	good := mint("saslgate", "mail.send", exp)

	for _, c := range []struct {
		name   string
		stdin  string
		args   []string
		want   []string
		stderr string
	}{
		{
			name: "accepted, and the backends take the user's secret",
			args: []string{"--login", good},
			want: []string{
				tokenLine("saslgate", "mail.send", exp),
				"OK   imap      " + accepted("mail.send"),
				"OK   smtp      " + accepted("mail.send"),
				"OK   secret    backend secret for alice found (source hmac)",
				"OK   routes    2 pool(s), 0 route source(s)",
				"OK   route     imap alice → imap pool backend, member " + e.imapAddr + " (route from default); the user's secret from the secrets section",
				"OK   login     imap backend " + e.imapAddr + " accepts alice",
				"OK   route     smtp alice → smtp pool backend, member " + e.smtpAddr + " (route from default); the user's secret from the secrets section",
				"OK   login     smtp backend " + e.smtpAddr + " accepts alice",
				"user alice",
				"all 9 checks passed",
			},
		},
		{
			name:  "from standard input",
			stdin: good + "\n",
			args:  []string{"-"},
			want: []string{
				tokenLine("saslgate", "mail.send", exp),
				"OK   imap      " + accepted("mail.send"),
				"OK   smtp      " + accepted("mail.send"),
				"OK   secret    backend secret for alice found (source hmac)",
				"user alice",
				"all 4 checks passed",
			},
		},
		{
			name: "for SMTP only",
			args: []string{"--protocol", "smtp", good},
			want: []string{
				tokenLine("saslgate", "mail.send", exp),
				"OK   smtp      " + accepted("mail.send"),
				"OK   secret    backend secret for alice found (source hmac)",
				"user alice",
				"all 3 checks passed",
			},
		},
		{
			name: "expired",
			args: []string{mint("saslgate", "mail.send", past)},
			want: []string{
				tokenLine("saslgate", "mail.send", past),
				"FAIL imap      invalid_token: introspect: invalid token: token expired",
				"FAIL smtp      invalid_token: introspect: invalid token: token expired",
			},
			stderr: "saslgate: 2 of 3 checks failed\n",
		},
		{
			name: "issued to another audience",
			args: []string{mint("webmail", "mail.send", exp)},
			want: []string{
				tokenLine("webmail", "mail.send", exp),
				"FAIL imap      invalid_token: introspect: invalid token: audience mismatch",
				"FAIL smtp      invalid_token: introspect: invalid token: audience mismatch",
			},
			stderr: "saslgate: 2 of 3 checks failed\n",
		},
		{
			name: "without the SMTP scope",
			args: []string{mint("saslgate", "", exp)},
			want: []string{
				tokenLine("saslgate", "", exp),
				"OK   imap      " + accepted(""),
				`FAIL smtp      insufficient_scope (needs scope "mail.send"): introspect: insufficient scope: scope "mail.send" missing for smtp`,
				"OK   secret    backend secret for alice found (source hmac)",
				"user alice",
			},
			stderr: "saslgate: 1 of 4 checks failed\n",
		},
		{
			// --login tries only the backends of the protocols the token is good for.
			name: "without the SMTP scope, with --login",
			args: []string{"--login", mint("saslgate", "", exp)},
			want: []string{
				tokenLine("saslgate", "", exp),
				"OK   imap      " + accepted(""),
				`FAIL smtp      insufficient_scope (needs scope "mail.send"): introspect: insufficient scope: scope "mail.send" missing for smtp`,
				"OK   secret    backend secret for alice found (source hmac)",
				"OK   routes    2 pool(s), 0 route source(s)",
				"OK   route     imap alice → imap pool backend, member " + e.imapAddr + " (route from default); the user's secret from the secrets section",
				"OK   login     imap backend " + e.imapAddr + " accepts alice",
				"user alice",
			},
			stderr: "saslgate: 1 of 7 checks failed\n",
		},
		{
			name: "a client asking to act as another user",
			args: []string{"--user", "bob", "--protocol", "imap", good},
			want: []string{
				tokenLine("saslgate", "mail.send", exp),
				`FAIL imap      invalid_token: proxy: authorization identity "bob" is not the token's user "alice"`,
			},
			stderr: "saslgate: 1 of 2 checks failed\n",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runCmd(t, c.stdin, append([]string{"token", "verify", "--config", path}, c.args...)...)
			wantCode := 0
			if c.stderr != "" {
				wantCode = 1
			}
			if want := lines(c.want...); code != wantCode || anHourLeft(out) != want || errs != c.stderr {
				t.Errorf("exit %d, stderr %q (want %d, %q)\n got:\n%s\nwant:\n%s", code, errs, wantCode, c.stderr, out, want)
			}
		})
	}

	key, err := backends.ReadHMACKeyFile(e.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, out, errs := runCmd(t, "", "token", "verify", "--config", path, "--login", good)
	if strings.Contains(out+errs, good) || strings.Contains(out+errs, backends.DeriveSecret(key, "alice").Reveal()) {
		t.Errorf("the output shows the token or alice's backend secret:\n%s%s", out, errs)
	}
}

// An issuer that cannot be reached is not a verdict on the token: the clients would be told
// to come back later.
func TestTokenVerifyIssuerDown(t *testing.T) {
	e := newMailEnv(t)
	dead := "http://" + deadAddr(t)
	unreachable, err := demoissuer.New(dead, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := unreachable.Mint(demoissuer.Claims{Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	e.Issuer = fmt.Sprintf("{issuer: %q, audience: [saslgate], username_claim: sub}", dead)

	code, out, errs := runCmd(t, "", "token", "verify", "--config", e.config(t), "--protocol", "imap", tok)
	wantFail := "FAIL imap      temporary failure (clients would see NO [UNAVAILABLE] / 454): introspect: temporary failure: identity provider unavailable: " +
		`introspect: Get "` + dead + `/.well-known/openid-configuration": dial tcp ` + strings.TrimPrefix(dead, "http://") + ": connect: connection refused\n"
	if lines := strings.SplitAfter(out, "\n"); code != 1 || len(lines) != 3 || lines[1] != wantFail || !strings.HasSuffix(errs, "saslgate: 1 of 2 checks failed\n") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 1 and the line\n%s", code, out, errs, wantFail)
	}
}

// `saslgate probe --token-file` reads the token from a file, as scripts keep it.
func TestProbeTokenFile(t *testing.T) {
	cfg, iss := adminEnv(t)
	g := startTestGateway(t, cfg)
	url := "imaps://" + g.addrs["imaps"].String()
	tok, err := iss.Mint(demoissuer.Claims{Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errs := runCmd(t, "", "probe", "--insecure-skip-verify", "--token-file", file, url)
	if !strings.HasSuffix(out, "\nprobe: authenticated with OAUTHBEARER: OK [CAPABILITY IMAP4rev1 LITERAL- UNSELECT ENABLE IDLE UTF8=ACCEPT] Logged in\n") || code != 0 || errs != "" {
		t.Errorf("probe --token-file: exit %d, stderr %q\n%s", code, errs, out)
	}
	if strings.Contains(out, tok) {
		t.Errorf("the transcript shows the token:\n%s", out)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		empty:                         "saslgate: " + empty + ": empty\n",
		filepath.Join(dir, "missing"): "saslgate: open " + filepath.Join(dir, "missing") + ": no such file or directory\n",
	} {
		if code, out, errs := runCmd(t, "", "probe", "--insecure-skip-verify", "--token-file", file, url); code != 1 || out != "" || errs != want {
			t.Errorf("probe --token-file %s: exit %d, stdout %q, stderr %q; want 1 and %q", file, code, out, errs, want)
		}
	}
}
