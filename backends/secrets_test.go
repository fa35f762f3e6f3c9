package backends

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile keeps an existing file's mode
		t.Fatal(err)
	}
}

func TestSecretRedaction(t *testing.T) {
	s := Secret("hunter2-very-secret")
	got := fmt.Sprintf("%v %s %+v %#v %q %x %d", s, s, s, s, s, s, s)
	if strings.Contains(got, "hunter2") || strings.Contains(got, fmt.Sprintf("%x", "hunter2")) {
		t.Errorf("fmt leaked the secret: %s", got)
	}
	if !strings.Contains(got, "[redacted]") {
		t.Errorf("fmt output %q lacks [redacted]", got)
	}
	st := struct{ Pass Secret }{s}
	if got := fmt.Sprintf("%v %+v %#v", st, st, &st); strings.Contains(got, "hunter2") {
		t.Errorf("fmt of a struct leaked the secret: %s", got)
	}

	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		slog.New(h).Info("login", "secret", s, "group", slog.GroupValue(slog.Any("s", s)))
	}
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), "[redacted]") {
		t.Errorf("slog output: %s", buf.String())
	}
	if j, _ := json.Marshal(st); strings.Contains(string(j), "hunter2") {
		t.Errorf("json leaked the secret: %s", j)
	}
	if s.Reveal() != "hunter2-very-secret" {
		t.Errorf("Reveal = %q", s.Reveal())
	}
}

func TestDeriveSecretVector(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	const user = "alice@example.com"
	// Computed independently: python3 hmac.new(key, user, sha256), urlsafe base64, '=' stripped.
	const want = "hBJA0qW2ZUs64h_ESZ23t4Zwd83WfD4WzvH5hD4n0fo"
	m := hmac.New(sha256.New, key)
	m.Write([]byte(user))
	if ind := base64.RawURLEncoding.EncodeToString(m.Sum(nil)); ind != want {
		t.Fatalf("independent computation = %q, want %q", ind, want)
	}
	if got := DeriveSecret(key, user).Reveal(); got != want {
		t.Errorf("DeriveSecret = %q, want %q", got, want)
	}
}

func TestHMACSource(t *testing.T) {
	dir := t.TempDir()
	key := "0123456789abcdef0123456789abcdef"
	path := filepath.Join(dir, "key")
	writeFile(t, path, key+"\n", 0o600)
	src, err := NewSecretSource(SecretsConfig{Source: "hmac", HMACKeyFile: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := src.Secret(context.Background(), "alice@example.com")
	if err != nil || got.Reveal() != "hBJA0qW2ZUs64h_ESZ23t4Zwd83WfD4WzvH5hD4n0fo" {
		t.Errorf("Secret = %q, %v (trailing newline must be trimmed)", got.Reveal(), err)
	}
	if _, err := src.Secret(context.Background(), ""); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("empty user: err = %v, want ErrUnknownUser", err)
	}

	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o610} {
		writeFile(t, path, key, mode)
		if _, err := NewSecretSource(SecretsConfig{Source: "hmac", HMACKeyFile: path}, nil); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%#o", mode)) {
			t.Errorf("key file mode %#o: err = %v, want one naming the mode", mode, err)
		}
	}
}

// TestHMACKeyFileFormat pins what a key file is: one line of text whose bytes, without the
// line end, are the key (ReadHMACKeyFile).
func TestHMACKeyFileFormat(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	path := filepath.Join(t.TempDir(), "key")
	for _, tc := range []struct{ name, content, want, err string }{
		{"no line end", key, key, ""},
		{"LF", key + "\n", key, ""},
		{"CRLF", key + "\r\n", key, ""},
		{"base64 is not decoded", "c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5\n", "c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5", ""},
		{"spaces are part of the key", " " + key + " \n", " " + key + " ", ""},
		{"UTF-8 text", "schlüssel-für-saslgate-ünd-mehr\n", "schlüssel-für-saslgate-ünd-mehr", ""},
		{"short", "short-key\n", "", "at least 16"},
		{"two lines", key + "\n" + key + "\n", "", "not one line of text"},
		{"NUL byte", key[:10] + "\x00" + key[10:], "", "not one line of text"},
		{"tab", key[:10] + "\t" + key[10:], "", "not one line of text"},
		{"DEL", key + "\x7f", "", "not one line of text"},
		{"invalid UTF-8", key + "\xff\xfe", "", "not one line of text"},
	} {
		writeFile(t, path, tc.content, 0o600)
		got, err := ReadHMACKeyFile(path)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: ReadHMACKeyFile = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}

	// 256 raw random keys: before the format was fixed, a key ending in CR or LF was read
	// back shorter than it was written. Binary keys are now refused, whatever their last byte.
	raw := make([]byte, 32)
	for last := range 256 {
		for i := range raw {
			raw[i] = byte(0x80 + i) // not UTF-8 on its own
		}
		raw[31] = byte(last)
		writeFile(t, path, string(raw), 0o600)
		if _, err := ReadHMACKeyFile(path); err == nil {
			t.Fatalf("binary key ending in %#x was accepted", last)
		}
	}
}

// TestNewHMACKeyFile checks that what NewHMACKeyFile returns is exactly what the hmac source
// reads back, on many fresh keys (a writer and a reader that disagree fail a few in 256).
func TestNewHMACKeyFile(t *testing.T) {
	dir := t.TempDir()
	for i := range 300 {
		path := filepath.Join(dir, fmt.Sprintf("key%d", i))
		key, err := NewHMACKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode(), err)
		}
		if len(key) != 43 {
			t.Fatalf("key is %d bytes, want 43 (32 random bytes in unpadded base64url)", len(key))
		}
		src, err := NewSecretSource(SecretsConfig{Source: "hmac", HMACKeyFile: path}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := src.Secret(context.Background(), "alice")
		if want := DeriveSecret(key, "alice"); got != want {
			t.Fatalf("key %d: the source derives %q, the writer's key %q", i, got.Reveal(), want.Reveal())
		}
	}
	if _, err := NewHMACKeyFile(filepath.Join(dir, "key0")); err == nil {
		t.Error("NewHMACKeyFile overwrote an existing key file")
	}
}

func TestSecretsFileParse(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secrets")
	writeFile(t, path, "# backend secrets\n\nalice@example.com:s3cret\r\n  # indented comment\nbob:with:colons and spaces \n", 0o600)
	src, err := NewSecretSource(SecretsConfig{Source: "file", File: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"alice@example.com": "s3cret", "bob": "with:colons and spaces "} {
		got, err := src.Secret(context.Background(), user)
		if err != nil || got.Reveal() != want {
			t.Errorf("Secret(%q) = %q, %v; want %q", user, got.Reveal(), err, want)
		}
	}
	if _, err := src.Secret(context.Background(), "carol"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: err = %v", err)
	}

	for _, bad := range []struct{ content, want string }{
		{"alice\n", "line 1: want user:secret"},
		{"# c\nalice:x\nalice:y\n", "line 3: duplicate user"},
		{":x\n", "line 1: empty user"},
		{"alice:\n", "line 1: empty secret"},
	} {
		writeFile(t, path, bad.content, 0o600)
		_, err := NewSecretSource(SecretsConfig{Source: "file", File: path}, nil)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want %q", bad.content, err, bad.want)
		}
	}
}

func TestSecretsFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets")
	// Write-only and execute-only bits count too: a group that can write the file can replace
	// the secrets (0o620, 0o602, 0o610, 0o601).
	for _, mode := range []os.FileMode{0o644, 0o604, 0o640, 0o660, 0o620, 0o602, 0o610, 0o601} {
		writeFile(t, path, "alice:s3cret\n", mode)
		_, err := NewSecretSource(SecretsConfig{Source: "file", File: path}, nil)
		if want := fmt.Sprintf("%#o", mode); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %#o: err = %v, want one naming %s", mode, err, want)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		writeFile(t, path, "alice:s3cret\n", mode)
		if _, err := NewSecretSource(SecretsConfig{Source: "file", File: path}, nil); err != nil {
			t.Errorf("mode %#o: %v", mode, err)
		}
	}
}

func TestSecretsFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets")
	writeFile(t, path, "alice:first\n", 0o600)
	var logs bytes.Buffer
	now := time.Unix(1_700_000_000, 0)
	src, err := newFileSource(path, slog.New(slog.NewTextHandler(&logs, nil)), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(want string) {
		t.Helper()
		got, err := src.Secret(context.Background(), "alice")
		if err != nil || got.Reveal() != want {
			t.Errorf("Secret(alice) = %q, %v; want %q", got.Reveal(), err, want)
		}
	}
	lookup("first")

	writeFile(t, path, "alice:second-longer\n", 0o600)
	now = now.Add(500 * time.Millisecond)
	lookup("first") // not checked again within a second
	now = now.Add(600 * time.Millisecond)
	lookup("second-longer")

	// Same size: the mtime tells.
	writeFile(t, path, "alice:third--longer\n", 0o600)
	mtime := time.Unix(1_600_000_000, 0)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	lookup("third--longer")

	// A failed reload keeps the old contents and logs once, without secrets.
	writeFile(t, path, "alice:fourth\nbroken line\n", 0o600)
	now = now.Add(2 * time.Second)
	lookup("third--longer")
	now = now.Add(2 * time.Second)
	lookup("third--longer")
	if n := strings.Count(logs.String(), "reload failed"); n != 1 {
		t.Errorf("logged %d reload failures, want 1:\n%s", n, logs.String())
	}
	writeFile(t, path, "alice:fifth\n", 0o644)
	now = now.Add(2 * time.Second)
	lookup("third--longer")
	if !strings.Contains(logs.String(), "0644") {
		t.Errorf("mode failure not logged:\n%s", logs.String())
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	lookup("fifth")
	for _, s := range []string{"first", "second-longer", "third--longer", "fourth", "fifth"} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("log contains secret %q:\n%s", s, logs.String())
		}
	}
}

func TestSecretsConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  SecretsConfig
		want []string // substrings; nil means valid
	}{
		{SecretsConfig{Source: "file", File: "/x"}, nil},
		{SecretsConfig{Source: "hmac", HMACKeyFile: "/x"}, nil},
		{SecretsConfig{}, []string{"source: required"}},
		{SecretsConfig{Source: "vault"}, []string{`source: "vault"`}},
		{SecretsConfig{Source: "file", HMACKeyFile: "/k"}, []string{"file: required", "hmac_key_file: only used"}},
		{SecretsConfig{Source: "hmac", File: "/f"}, []string{"hmac_key_file: required", "file: only used"}},
	} {
		err := tc.cfg.Validate()
		if tc.want == nil {
			if err != nil {
				t.Errorf("%+v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: no error, want %q", tc.cfg, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "backends: ") {
				t.Errorf("%+v: err = %v, want %q", tc.cfg, err, w)
			}
		}
	}
}
