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
