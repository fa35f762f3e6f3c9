package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The documented example must load as it is: it is what admins copy.
func TestExampleConfigLoads(t *testing.T) {
	cfg, err := loadConfig("../../examples/saslgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 4 || cfg.Sections["imap"].BackendConfig().Address != "127.0.0.1:143" || cfg.Sections["smtp"].BackendConfig().Address != "127.0.0.1:587" || cfg.Tokens.Issuers[0].UsernameClaim != "email" {
		t.Errorf("example decoded to unexpected values: %+v", cfg)
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "saslgate.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string // every one must appear in the error
	}{
		{"misspelt key names key and line", "log:\n  level: info\n  fromat: json\n",
			[]string{"line 3", "fromat"}},
		{"every problem at once", `
tls: {cert_file: c.pem}
listeners:
  - {name: a, protocol: pop3, address: nowhere, tls: maybe}
imap:
  backend: {address: 127.0.0.1:143, tls: none}
secrets: {source: hmac}
tokens:
  issuers:
    - {issuer: "https://idp.example.com", audience: [saslgate]}
`, []string{"tls.key_file", "listeners[0].protocol", "listeners[0].address", "listeners[0].tls", "hmac_key_file"}},
		{"bad duration", "imap:\n  preauth_timeout: soon\n", []string{"line 2"}},
		{"empty file", "", []string{"empty configuration"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tc.text))
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "saslgate ") {
		t.Errorf("version: exit %d, output %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"serve", "--config", writeConfig(t, "bogus: 1\n")}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "bogus") {
		t.Errorf("serve with bad config: exit %d, stderr %q", code, errb.String())
	}
}

// The secrets section is required only while a backend in use logs in with the user's own
// secret; present, it is checked all the same.
func TestSecretsSectionOnlyWhenNeeded(t *testing.T) {
	const master = `{address: "127.0.0.1:143", tls: none, login: master, master_user: admin, master_secret_file: /m}`
	for _, tc := range []struct {
		name       string
		imap, smtp string // the backends; smtp "": no smtp listener
		secrets    string
		want       string // "": loads
	}{
		{"master, no secrets", master, "", "", ""},
		{"master_separator, no secrets",
			`{address: "127.0.0.1:143", tls: none, login: master_separator, master_user: admin, master_secret_file: /m, master_separator: "%"}`, "", "", ""},
		{"master and xclient, no secrets", master, `{address: "127.0.0.1:587", tls: none, login: xclient}`, "", ""},
		{"token, no secrets", `{address: "127.0.0.1:143", tls: none, login: token}`,
			`{address: "127.0.0.1:587", tls: none, login: token, token_mechanism: xoauth2}`, "", ""},
		{"token_mechanism with login plain", `{address: "127.0.0.1:143", tls: none, token_mechanism: xoauth2}`, "", "secrets: {source: hmac, hmac_key_file: /k}",
			`imap.backend: backends: token_mechanism: only used with login "token"`},
		{"plain, no secrets", `{address: "127.0.0.1:143", tls: none}`, "", "", "source: required"},
		{"master, and an smtp backend with a per-user secret", master, `{address: "127.0.0.1:587", tls: none, login: plain}`, "", "source: required"},
		{"master, a broken secrets section", master, "", "secrets: {source: hmac}", "hmac_key_file: required"},
		{"master keys with login plain", `{address: "127.0.0.1:143", tls: none, master_user: admin}`, "", "secrets: {source: hmac, hmac_key_file: /k}",
			"imap.backend: backends: master_user: only used with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := `
tls: {cert_file: c.pem, key_file: k.pem}
tokens:
  issuers:
    - {issuer: "https://idp.example.com", audience: [saslgate], username_claim: email}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:0", tls: implicit}
`
			if tc.smtp != "" {
				text += `  - {name: smtps, protocol: smtp, address: "127.0.0.1:0", tls: implicit}
smtp:
  backend: ` + tc.smtp + "\n"
			}
			text += "imap:\n  backend: " + tc.imap + "\n" + tc.secrets + "\n"
			_, err := loadConfig(writeConfig(t, text))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("loadConfig: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("loadConfig: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
