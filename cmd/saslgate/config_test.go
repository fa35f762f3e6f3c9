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
	if len(cfg.Listeners) != 4 || imapBackend(cfg).Address != "127.0.0.1:143" || sectionBackend(cfg, "smtp").Address != "127.0.0.1:587" || cfg.Tokens.Issuers[0].UsernameClaim != "email" {
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
  - {name: a, protocol: nntp, address: nowhere, tls: maybe}
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

// The cluster example loads, and means what its comments say: two imap pools and one smtp
// pool, each protocol's default, and the four route sources in order.
func TestClusterExampleLoads(t *testing.T) {
	cfg, err := loadConfig("../../examples/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.defaultPools(); got["imap"] != "shard1" || got["smtp"] != "shard1" {
		t.Errorf("default pools %v", got)
	}
	if n := len(cfg.poolConfigs()); n != 3 {
		t.Errorf("%d pools, want 3", n)
	}
	s := cfg.Routes.Sources
	if len(s) != 4 || s[0].Static == nil || s[1].HTTP == nil || s[2].LDAP == nil || s[3].Hash == nil {
		t.Errorf("route sources %+v, want static, http, ldap, hash", s)
	}
	if cfg.needsSecrets() {
		t.Error("the cluster logs in as a master user: no secrets section is needed")
	}
}

// Pools and routes: every problem named, at once.
func TestPoolConfigErrors(t *testing.T) {
	const head = `
tls: {cert_file: c.pem, key_file: k.pem}
tokens:
  issuers:
    - {issuer: "https://idp.example.com", audience: [saslgate], username_claim: email}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:0", tls: implicit}
`
	const pool = "  - {name: shard, protocol: imap, tls: none, login: master, master_user: m, master_secret_file: /m, members: [{address: \"10.0.0.1:143\"}]}\n"
	for _, tc := range []struct{ name, text, want string }{
		{"ok", "pools:\n" + pool + "imap: {pool: shard}\n", ""},
		{"unknown default pool", "pools:\n" + pool + "imap: {pool: shrad}\n", `imap.pool: "shrad" is not among the imap pools of the pools section`},
		{"pool and backend", "pools:\n" + pool + "imap: {pool: shard, backend: {address: \"10.0.0.1:143\", tls: none}}\n", "imap.pool and imap.backend: set one, not both"},
		{"neither", "imap: {allow_token_as_login_password: false}\n", "imap.pool or imap.backend: one is required"},
		{"pool twice", "pools:\n" + pool + pool + "imap: {pool: shard}\n", `pools[1]: imap pool "shard" is defined twice`},
		{"pool of an unknown protocol", "pools:\n" + pool + "  - {name: x, protocol: gopher, tls: none, members: [{address: \"h:70\"}]}\nimap: {pool: shard}\n", `pools[1]: protocol "gopher" is not supported`},
		{"pool with an address", "pools:\n  - {name: shard, protocol: imap, tls: none, address: \"10.0.0.1:143\", members: [{address: \"10.0.0.1:143\"}]}\nimap: {pool: shard}\n", "pools[0]: address: a pool has members"},
		{"hash over an unknown pool", "pools:\n" + pool + "imap: {pool: shard}\nroutes: {sources: [{hash: {pool: nosuch}}]}\n", `hash: pool "nosuch" is not in the pools section`},
		{"source of two kinds", "pools:\n" + pool + "imap: {pool: shard}\nroutes: {sources: [{static: {file: /r}, hash: {}}]}\n", "routes.sources[0]: want exactly one of static, hash, http, ldap"},
		{"shared routes without a shared store", "pools:\n" + pool + "imap: {pool: shard}\nroutes: {shared: true, sources: [{hash: {}}]}\n", "routes.shared: needs the shared section"},
		{"http source without url", "pools:\n" + pool + "imap: {pool: shard}\nroutes: {sources: [{http: {}}]}\n", "routes.sources[0]: http: url: required"},
		{"member misconfigured", "pools:\n  - {name: shard, protocol: imap, tls: none, members: [{address: \"10.0.0.1\"}]}\nimap: {pool: shard}\n", "pools[0]: members[0]: backends: address:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, head+tc.text))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("loadConfig: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("loadConfig: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
