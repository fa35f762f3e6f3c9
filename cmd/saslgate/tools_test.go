package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/backends"
)

// The tool commands' argument handling and offline paths; e2e/tools_test.go runs them
// against the real IdP, Dovecot and saslgate.

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx := context.Background()
	var err error
	switch args[0] {
	case "secrets":
		err = secretsCmd(ctx, args[1:], strings.NewReader(stdin), &out, &errb)
	case "token":
		err = tokenCmd(ctx, args[1:], strings.NewReader(stdin), &out, &errb)
	default:
		return run(args, &out, &errb), out.String(), errb.String()
	}
	if err != nil {
		errb.WriteString("saslgate: " + err.Error() + "\n")
		return 1, out.String(), errb.String()
	}
	return 0, out.String(), errb.String()
}

func TestSecretsOffline(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	keyFile := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	want := backends.DeriveSecret(key, "alice@example.com").Reveal()
	if code, out, errs := runCmd(t, "", "secrets", "derive", "--key-file", keyFile, "alice@example.com"); code != 0 || out != want+"\n" {
		t.Errorf("derive: exit %d, %q %q", code, out, errs)
	}
	code, out, _ := runCmd(t, "alice@example.com\n\n# skipped\nbob@example.com\n", "secrets", "export", "--key-file", keyFile, "--scheme", "ssha512")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "alice@example.com:{SSHA512}") || !strings.HasPrefix(lines[1], "bob@example.com:{SSHA512}") {
		t.Errorf("export: exit %d\n%s", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"secrets"}, "want the subcommand"},
		{[]string{"secrets", "derive", keyFile}, "--config or --key-file is required"},
		{[]string{"secrets", "derive", "--key-file", keyFile}, "exactly one USER"},
		{[]string{"secrets", "export", "--key-file", keyFile, "--format", "ldif", "a"}, "unknown format"},
		{[]string{"secrets", "export", "--key-file", keyFile, "--scheme", "MD5", "a"}, "unknown scheme"},
		{[]string{"secrets", "export", "--key-file", keyFile, "a:b"}, "cannot be written to a passwd-file"},
	} {
		if code, _, errs := runCmd(t, "", c.args...); code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", c.args, code, errs, c.want)
		}
	}
	os.Chmod(keyFile, 0o644)
	if code, _, errs := runCmd(t, "", "secrets", "derive", "--key-file", keyFile, "alice"); code == 0 || !strings.Contains(errs, "chmod 600") {
		t.Errorf("readable key file: exit %d, %q", code, errs)
	}

	// genkey writes a key file that derive reads: the printed secret is the HMAC of the
	// file's one line, as a shell's $(cat FILE) would give it.
	genFile := filepath.Join(t.TempDir(), "new.key")
	if code, out, errs := runCmd(t, "", "secrets", "genkey", genFile); code != 0 || out != "" {
		t.Fatalf("genkey: exit %d, %q %q", code, out, errs)
	}
	b, err := os.ReadFile(genFile)
	if err != nil || len(b) != 44 || b[43] != '\n' {
		t.Fatalf("genkey wrote %q, %v; want 43 characters and a newline", b, err)
	}
	want = backends.DeriveSecret(b[:43], "alice").Reveal()
	if code, out, errs := runCmd(t, "", "secrets", "derive", "--key-file", genFile, "alice"); code != 0 || out != want+"\n" {
		t.Errorf("derive with a generated key: exit %d, %q %q; want %q", code, out, errs, want)
	}
	if code, _, errs := runCmd(t, "", "secrets", "genkey", genFile); code == 0 || !strings.Contains(errs, "exists") {
		t.Errorf("genkey over an existing file: exit %d, %q", code, errs)
	}
	if code, _, errs := runCmd(t, "", "secrets", "genkey"); code == 0 || !strings.Contains(errs, "exactly one FILE") {
		t.Errorf("genkey without FILE: exit %d, %q", code, errs)
	}
}

func TestToolCommandErrors(t *testing.T) {
	bad := writeConfig(t, "bogus: 1\n")
	for _, c := range []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{[]string{"check", "--config", bad}, 1, "FAIL config", "1 of 1 checks failed"},
		{[]string{"token"}, 1, "", "want the subcommand verify"},
		{[]string{"token", "verify", "--config", bad, "tok"}, 1, "", "bogus"},
		{[]string{"probe", "pop4://mail.example.com"}, 1, "", "want imaps://"},
		{[]string{"probe"}, 1, "", "exactly one URL"},
		{[]string{"login", "--token-file", filepath.Join(t.TempDir(), "none.json")}, 1, "", "give your email address"},
		{[]string{"check", "-h"}, 0, "", "usage: saslgate check"},
	} {
		code, out, errs := runCmd(t, "", c.args...)
		if code != c.code || !strings.Contains(out, c.wantStdout) || !strings.Contains(errs, c.wantStderr) {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q", c.args, code, out, errs)
		}
	}
	if _, err := readToken("", strings.NewReader("\n")); err == nil {
		t.Error("empty token accepted")
	}
	if tok, _ := readToken("-", strings.NewReader("  abc.def.ghi \nrest")); tok != "abc.def.ghi" {
		t.Errorf("token from stdin %q", tok)
	}
	if d := describeToken("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcCIsInN1YiI6ImFsaWNlIn0.sig"); !strings.Contains(d, "alg=RS256 kid=k1") || !strings.Contains(d, "iss=https://idp sub=alice") {
		t.Errorf("describeToken: %s", d)
	}
	if d := describeToken("opaque-token"); !strings.HasPrefix(d, "opaque") {
		t.Errorf("describeToken: %s", d)
	}
}
