package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writePair(t *testing.T, dir string, host string) []byte {
	t.Helper()
	cert, certPEM, err := SelfSigned(host)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert.Certificate[0]
}

// A certificate renewed on disk is served from the next check on; a broken
// replacement is refused and the running certificate kept.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	first := writePair(t, dir, "one.example")
	s, err := Load(Config{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Certificate().Certificate[0]; !bytes.Equal(got, first) {
		t.Fatal("Load serves another certificate than the file's")
	}
	second := writePair(t, dir, "two.example")
	// Files written within the same mtime tick look unchanged: move the clock
	// of both files and of the last check instead of sleeping.
	future := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(dir, "cert.pem"), future, future)
	os.Chtimes(filepath.Join(dir, "key.pem"), future, future)
	s.lastCheck = time.Time{}
	if got := s.Certificate().Certificate[0]; !bytes.Equal(got, second) {
		t.Fatal("renewed certificate not served after the files changed")
	}

	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("not a certificate"), 0o644)
	later := future.Add(time.Minute)
	os.Chtimes(filepath.Join(dir, "cert.pem"), later, later)
	s.lastCheck = time.Time{}
	if got := s.Certificate().Certificate[0]; !bytes.Equal(got, second) {
		t.Fatal("a broken replacement displaced the working certificate")
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(Config{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}, nil); err == nil {
		t.Error("Load of missing files succeeded")
	}
	if err := (Config{}).Validate(); err == nil {
		t.Error("empty Config validates")
	}
}

// A renewal renamed into place is noticed even when it carries the old files' modification
// time (written within one timestamp tick, or copied with cp -p): it is another file.
func TestReloadRenamedIntoPlace(t *testing.T) {
	dir, next := t.TempDir(), t.TempDir()
	writePair(t, dir, "one.example")
	s, err := Load(Config{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	second := writePair(t, next, "two.example")
	for _, name := range []string{"cert.pem", "key.pem"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(next, name), st.ModTime(), st.ModTime())
		if err := os.Rename(filepath.Join(next, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	s.lastCheck = time.Time{}
	if got := s.Certificate().Certificate[0]; !bytes.Equal(got, second) {
		t.Fatal("a renewal renamed into place with the old modification time is not served")
	}
}
