package oauthlogin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	RefreshToken string    `json:"refresh_token,omitempty"`
	AccessToken  string    `json:"access_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

// Load reads the state file. A missing file wraps ErrNoState; a file that group or others can
// access is refused.
func Load(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoState, path)
	}
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("oauthlogin: %s has mode %#o; it holds a refresh token and must not be accessible by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	var st State
	if err := json.NewDecoder(f).Decode(&st); err != nil {
		return nil, fmt.Errorf("oauthlogin: %s: %v", path, err)
	}
	return &st, nil
}

// Save writes the state file with mode 0600 (its directory 0700 when created), replacing it
// atomically so a concurrent reader sees the old or the new file, never half of one.
func (s *State) Save(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("oauthlogin: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
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
