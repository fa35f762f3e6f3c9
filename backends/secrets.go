package backends

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/saslgate/saslgate/internal/secretfile"
)

// ErrUnknownUser is wrapped by SecretSource.Secret when it has no secret for the user.
var ErrUnknownUser = errors.New("backends: no secret for user")

// SecretSource returns the backend secret of a mailbox user. Implementations are safe for
// concurrent use.
type SecretSource interface {
	Secret(ctx context.Context, user string) (Secret, error)
}

// SecretsConfig selects where backend secrets come from.
type SecretsConfig struct {
	// Source is "file" (a file of "user:secret" lines) or "hmac" (secrets derived from a key
	// with DeriveSecret, so the backend's passdb holds the same derived values).
	Source string `yaml:"source"`
	// File is the secrets file for source "file". It must not be accessible by group or
	// others (mode 0600 or 0400); it is re-read when its size, mtime or mode changes.
	File string `yaml:"file"`
	// HMACKeyFile is the key file for source "hmac", in the format ReadHMACKeyFile reads:
	// one line of text. Same mode rule as File; it is read once, at start.
	HMACKeyFile string `yaml:"hmac_key_file"`
}

// MinHMACKeyLen is the shortest HMAC key accepted, in bytes.
const MinHMACKeyLen = 16

// fileCheckInterval is how often a lookup may stat the secrets file for changes.
const fileCheckInterval = time.Second

// maxSecretsFileSize bounds what is read into memory from a secrets or key file.
const maxSecretsFileSize = 64 << 20

// Validate reports every problem in the configuration, naming the field.
func (c SecretsConfig) Validate() error {
	var errs []error
	switch c.Source {
	case "file":
		if c.File == "" {
			errs = append(errs, errors.New(`backends: file: required with source "file"`))
		}
		if c.HMACKeyFile != "" {
			errs = append(errs, errors.New(`backends: hmac_key_file: only used with source "hmac"`))
		}
	case "hmac":
		if c.HMACKeyFile == "" {
			errs = append(errs, errors.New(`backends: hmac_key_file: required with source "hmac"`))
		}
		if c.File != "" {
			errs = append(errs, errors.New(`backends: file: only used with source "file"`))
		}
	case "":
		errs = append(errs, errors.New(`backends: source: required: "file" or "hmac"`))
	default:
		errs = append(errs, fmt.Errorf(`backends: source: %q is not "file" or "hmac"`, c.Source))
	}
	return errors.Join(errs...)
}

// NewSecretSource validates cfg and opens the configured source. The file or key must exist,
// be private (no group or other permission bits) and parse; a nil logger discards.
func NewSecretSource(cfg SecretsConfig, logger *slog.Logger) (SecretSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Source {
	case "file":
		return newFileSource(cfg.File, logger, time.Now)
	default: // "hmac", checked by Validate
		return newHMACSource(cfg.HMACKeyFile)
	}
}

// DeriveSecret returns base64url-nopad(HMAC-SHA256(key, user)), the secret the "hmac" source
// gives user. `saslgate secrets` uses it to produce the backend's passdb entries.
func DeriveSecret(key []byte, user string) Secret {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(user))
	return Secret(base64.RawURLEncoding.EncodeToString(m.Sum(nil)))
}

// readPrivateFile reads a secret file under secretfile's rule (no access for group or others,
// but for root's files a service user reads through its group).
func readPrivateFile(path, what string) ([]byte, fs.FileInfo, error) {
	b, fi, err := secretfile.Read(path, maxSecretsFileSize)
	if err != nil {
		return nil, nil, fmt.Errorf("backends: %s: %w", what, err)
	}
	return b, fi, nil
}

// parseSecrets parses "user:secret" lines. Errors name the line number, never its content,
// which may hold a secret.
func parseSecrets(b []byte) (map[string]Secret, error) {
	m := make(map[string]Secret)
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		user, secret, ok := strings.Cut(line, ":")
		user = strings.TrimSpace(user)
		switch {
		case !ok:
			return nil, fmt.Errorf("line %d: want user:secret", n)
		case user == "":
			return nil, fmt.Errorf("line %d: empty user", n)
		case secret == "":
			return nil, fmt.Errorf("line %d: empty secret for %q", n, user)
		case strings.IndexByte(secret, 0) >= 0:
			return nil, fmt.Errorf("line %d: secret for %q contains NUL", n, user)
		}
		if _, dup := m[user]; dup {
			return nil, fmt.Errorf("line %d: duplicate user %q", n, user)
		}
		m[user] = Secret(secret)
	}
	return m, nil
}

// fileSource serves secrets from a file, reloading it on lookup when it changed. No
// goroutine: a lookup stats the file at most once per fileCheckInterval.
type fileSource struct {
	path   string
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	secrets map[string]Secret
	seen    fs.FileInfo // last version tried, loaded or not, so a bad file is logged once
	checked time.Time
}

var _ SecretSource = (*fileSource)(nil)

func newFileSource(path string, logger *slog.Logger, now func() time.Time) (*fileSource, error) {
	s := &fileSource{path: path, logger: logger, now: now}
	m, fi, err := s.load()
	if err != nil {
		return nil, err
	}
	s.secrets, s.seen, s.checked = m, fi, now()
	return s, nil
}

func (s *fileSource) load() (map[string]Secret, fs.FileInfo, error) {
	b, fi, err := readPrivateFile(s.path, "secrets file")
	if err != nil {
		return nil, nil, err
	}
	m, err := parseSecrets(b)
	if err != nil {
		return nil, fi, fmt.Errorf("backends: secrets file %s: %w", s.path, err)
	}
	return m, fi, nil
}

// Secret returns the user's secret, or an error wrapping ErrUnknownUser.
func (s *fileSource) Secret(_ context.Context, user string) (Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); now.Sub(s.checked) >= fileCheckInterval || now.Before(s.checked) {
		s.checked = now
		s.reloadLocked()
	}
	sec, ok := s.secrets[user]
	if !ok {
		return "", fmt.Errorf("%w %q", ErrUnknownUser, user)
	}
	return sec, nil
}

func (s *fileSource) reloadLocked() {
	fi, err := os.Stat(s.path)
	if err != nil {
		if s.seen != nil {
			s.logger.Error("backends: secrets file unreadable, keeping previous contents", "file", s.path, "err", err)
			s.seen = nil
		}
		return
	}
	if s.seen != nil && os.SameFile(fi, s.seen) && fi.ModTime().Equal(s.seen.ModTime()) &&
		fi.Size() == s.seen.Size() && fi.Mode() == s.seen.Mode() {
		return
	}
	m, loaded, err := s.load()
	if loaded != nil {
		s.seen = loaded
	} else {
		s.seen = fi
	}
	if err != nil {
		s.logger.Error("backends: secrets file reload failed, keeping previous contents", "file", s.path, "err", err)
		return
	}
	s.secrets = m
	s.logger.Info("backends: secrets file reloaded", "file", s.path, "users", len(m))
}

// hmacSource derives every user's secret from one key.
type hmacSource struct{ key []byte }

var _ SecretSource = hmacSource{}

func newHMACSource(path string) (hmacSource, error) {
	key, err := ReadHMACKeyFile(path)
	if err != nil {
		return hmacSource{}, err
	}
	return hmacSource{key: key}, nil
}

// ReadHMACKeyFile returns the key in an HMAC key file. A key file is one line of UTF-8 text
// without control characters; the key is that text's bytes as they are (not decoded), without
// the line end, and at least MinHMACKeyLen bytes long. So `$(cat hmac.key)` in a shell is the
// same key, and a key written by an editor, by `openssl rand -base64 32 > hmac.key` or by
// NewHMACKeyFile reads the same everywhere. Raw random bytes are refused: they may end in a
// byte that looks like a line end, which once made two readers disagree on the key. The file
// must be private (no group or other permission bits).
func ReadHMACKeyFile(path string) ([]byte, error) {
	b, _, err := readPrivateFile(path, "hmac key file")
	if err != nil {
		return nil, err
	}
	key := bytes.TrimRight(b, "\r\n")
	if !utf8.Valid(key) || bytes.ContainsFunc(key, unicode.IsControl) {
		return nil, fmt.Errorf("backends: hmac key file %s is not one line of text (binary data or several lines); write a key with `saslgate secrets genkey FILE`", path)
	}
	if len(key) < MinHMACKeyLen {
		return nil, fmt.Errorf("backends: hmac key file %s: key is %d bytes, need at least %d", path, len(key), MinHMACKeyLen)
	}
	return key, nil
}

// NewHMACKeyFile creates path (mode 0600; an existing file is an error) holding a new key:
// 32 random bytes in unpadded base64url, 43 characters, and a newline. It returns the key as
// ReadHMACKeyFile reads it.
func NewHMACKeyFile(path string) ([]byte, error) {
	raw := make([]byte, 32)
	rand.Read(raw) // never fails (crypto/rand, Go 1.24)
	key := []byte(base64.RawURLEncoding.EncodeToString(raw))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backends: hmac key file: %w", err)
	}
	_, err = f.Write(append(key, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("backends: hmac key file: %w", err)
	}
	return key, nil
}

// Secret returns DeriveSecret(key, user); only an empty user has no secret.
func (s hmacSource) Secret(_ context.Context, user string) (Secret, error) {
	if user == "" {
		return "", fmt.Errorf("%w %q", ErrUnknownUser, user)
	}
	return DeriveSecret(s.key, user), nil
}
