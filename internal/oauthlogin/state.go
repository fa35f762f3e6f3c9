package oauthlogin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoState is wrapped by Load when the file does not exist.
var ErrNoState = errors.New("oauthlogin: no stored login")

// State is what the login file holds. It contains bearer credentials: the file is private.
type State struct {
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	TokenURL     string    `json:"token_endpoint"`
	Scopes       []string  `json:"scopes,omitempty"`
	Resource     string    `json:"resource,omitempty"` // RFC 8707, sent when the token was got
	RefreshToken string    `json:"refresh_token,omitempty"`
	AccessToken  string    `json:"access_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

// Load reads the state file. A missing file wraps ErrNoState; a file that group or others can
// access is refused.
func Load(path string) (*State, error) {
	var st State
	if err := readPrivate(path, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Save writes the state file with mode 0600 (its directory 0700 when created), replacing it
// atomically so a concurrent reader sees the old or the new file, never half of one.
func (s *State) Save(path string) error { return writePrivate(path, s) }

// RegistrationFile is where the client registration for the token file path is kept: beside
// it, "login.json" → "login.client.json".
func RegistrationFile(path string) string {
	if base, ok := strings.CutSuffix(path, ".json"); ok {
		return base + ".client.json"
	}
	return path + ".client.json"
}

// LoadRegistration reads a registration file like Load reads the state file.
func LoadRegistration(path string) (*Registration, error) {
	var r Registration
	if err := readPrivate(path, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Save writes the registration file like State.Save.
func (r *Registration) Save(path string) error { return writePrivate(path, r) }

// readPrivate decodes the JSON file at path, refusing a file group or others can access.
func readPrivate(path string, v any) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNoState, path)
	}
	if err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("oauthlogin: %s has mode %#o; it holds credentials and must not be accessible by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	if err := json.NewDecoder(f).Decode(v); err != nil {
		return fmt.Errorf("oauthlogin: %s: %v", path, err)
	}
	return nil
}

// writePrivate writes v as JSON to path with mode 0600 (its directory 0700 when created),
// through a temporary file renamed into place.
func writePrivate(path string, v any) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	f, err := os.CreateTemp(dir, ".saslgate-login-*")
	if err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("oauthlogin: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("oauthlogin: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	return nil
}
