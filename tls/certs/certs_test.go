package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
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

// pairConfig writes a new self-signed pair into dir and returns the Config naming it and the
// certificate's DER.
func pairConfig(t *testing.T, dir, host string) (Config, []byte) {
	t.Helper()
	der := writePair(t, dir, host)
	return Config{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}, der
}

// handshake runs a TLS handshake over net.Pipe between a client limited to versions
// [minVersion, maxVersion] and a server with cfg, and returns the certificate the client was
// served.
func handshake(t *testing.T, cfg *tls.Config, minVersion, maxVersion uint16) ([]byte, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := tls.Client(a, &tls.Config{InsecureSkipVerify: true, MinVersion: minVersion, MaxVersion: maxVersion})
	sc := tls.Server(b, cfg)
	errc := make(chan error, 1)
	go func() {
		err := sc.Handshake()
		b.Close() // unblock a client still waiting for the server's flight
		errc <- err
	}()
	cerr := cc.Handshake()
	a.Close()
	if serr := <-errc; cerr == nil && serr != nil {
		cerr = serr
	}
	if cerr != nil {
		return nil, cerr
	}
	return cc.ConnectionState().PeerCertificates[0].Raw, nil
}

// serves fails the test unless s now serves want, both through a TLS 1.3 handshake with its
// TLSConfig and through GetCertificate.
func serves(t *testing.T, s *Store, want []byte, step string) {
	t.Helper()
	got, err := handshake(t, s.TLSConfig(), tls.VersionTLS13, tls.VersionTLS13)
	if err != nil {
		t.Fatalf("%s: handshake: %v", step, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: the handshake served another certificate", step)
	}
	c, err := s.TLSConfig().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || c == nil || !bytes.Equal(c.Certificate[0], want) {
		t.Fatalf("%s: GetCertificate = %v, %v: another certificate", step, c, err)
	}
}

// Reload (SIGHUP) serves the pair its Config names from the next handshake on, whether the
// files were rewritten in place or the Config names others; a Reload that fails keeps both
// the certificate and the files watched.
func TestStoreReload(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	cfg, first := pairConfig(t, dir, "one.example")
	s, err := Load(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	serves(t, s, first, "after Load")

	_, second := pairConfig(t, dir, "two.example")
	if err := s.Reload(cfg); err != nil {
		t.Fatalf("Reload of the rewritten files: %v", err)
	}
	serves(t, s, second, "after Reload of the rewritten files")

	// The periodic check never looks at other's files: only Reload can switch to them.
	otherCfg, third := pairConfig(t, other, "three.example")
	if err := s.Reload(otherCfg); err != nil {
		t.Fatalf("Reload of other files: %v", err)
	}
	serves(t, s, third, "after Reload of other files")

	broken := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(broken, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mismatchCfg, _ := pairConfig(t, t.TempDir(), "four.example")
	garbage := write("garbage.pem", []byte("not a certificate"))
	otherKey, err := os.ReadFile(otherCfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	exposedKey := write("exposed-key.pem", otherKey)
	chmod(t, exposedKey, 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"garbage certificate", Config{CertFile: garbage, KeyFile: otherCfg.KeyFile}, "certs: "},
		{"garbage key", Config{CertFile: otherCfg.CertFile, KeyFile: garbage}, "certs: "},
		{"key of another certificate", Config{CertFile: mismatchCfg.CertFile, KeyFile: otherCfg.KeyFile}, "certs: "},
		{"missing file", Config{CertFile: filepath.Join(broken, "absent.pem"), KeyFile: otherCfg.KeyFile}, "certs: "},
		{"empty certificate", Config{CertFile: write("empty.pem", nil), KeyFile: otherCfg.KeyFile}, "certs: "},
		{"no key file named", Config{CertFile: otherCfg.CertFile}, "tls.key_file is required"},
		{"key file others can read", Config{CertFile: otherCfg.CertFile, KeyFile: exposedKey}, "has mode 0644; it must not be accessible by group or others (chmod 600"},
	} {
		err := s.Reload(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Reload err = %v, want one containing %q", tc.name, err, tc.want)
		}
		serves(t, s, third, "after the failed Reload of "+tc.name)
	}

	// The store still watches other's files: a renewal there is picked up by the periodic check.
	_, fifth := pairConfig(t, other, "five.example")
	future := time.Now().Add(time.Minute)
	os.Chtimes(otherCfg.CertFile, future, future)
	os.Chtimes(otherCfg.KeyFile, future, future)
	s.lastCheck = time.Time{}
	serves(t, s, fifth, "after renewing the files of the last good Reload")
}

// TLSConfig serves the store's current certificate through GetCertificate, with TLS 1.2 as
// the floor (RFC 8314 §4.1, RFC 9325 §3.1.1).
func TestStoreTLSConfig(t *testing.T) {
	cfg, der := pairConfig(t, t.TempDir(), "mail.example")
	loaded, err := Load(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fixed, _, err := SelfSigned("demo.example")
	if err != nil {
		t.Fatal(err)
	}
	// Let crypto/tls's own server default admit TLS 1.0 and 1.1, so that only the config's
	// MinVersion can refuse them.
	t.Setenv("GODEBUG", "tls10server=1")
	for _, tc := range []struct {
		name string
		s    *Store
		der  []byte
	}{
		{"Load", loaded, der},
		{"FromCertificate", FromCertificate(fixed), fixed.Certificate[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.s.TLSConfig()
			if c.MinVersion != tls.VersionTLS12 || c.MaxVersion != 0 || len(c.Certificates) != 0 || c.GetCertificate == nil {
				t.Errorf("TLSConfig: MinVersion %x, MaxVersion %x, %d Certificates, GetCertificate set %v; want 0x303, 0, 0, true",
					c.MinVersion, c.MaxVersion, len(c.Certificates), c.GetCertificate != nil)
			}
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				got, err := handshake(t, c, v, v)
				if err != nil || !bytes.Equal(got, tc.der) {
					t.Errorf("%s client: served another certificate or failed: %v", tls.VersionName(v), err)
				}
			}
			if _, err := handshake(t, c, tls.VersionTLS10, tls.VersionTLS11); err == nil {
				t.Error("a TLS 1.0/1.1 client completed a handshake")
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// The private key file is refused, like every other secret file saslgate reads, when group or
// others have any permission on it; its owner's bits and the certificate file's mode do not
// matter. The mode checked is the key's, not that of a symlink to it (cert-manager's and
// Kubernetes' Secret volume layout: key.pem -> ..data/key.pem, the link itself 0777).
func TestLoadKeyFileMode(t *testing.T) {
	for _, tc := range []struct {
		mode   os.FileMode
		link   bool // the configured key file is a symlink to the key
		refuse bool
	}{
		{mode: 0o600},
		{mode: 0o400},
		{mode: 0o700},
		{mode: 0o600, link: true},
		{mode: 0o640, refuse: true},
		{mode: 0o620, refuse: true},
		{mode: 0o610, refuse: true},
		{mode: 0o604, refuse: true},
		{mode: 0o602, refuse: true},
		{mode: 0o601, refuse: true},
		{mode: 0o444, refuse: true},
		{mode: 0o644, link: true, refuse: true},
	} {
		name := fmt.Sprintf("%#o", tc.mode)
		if tc.link {
			name += " behind a symlink"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, der := pairConfig(t, dir, "mail.example")
			chmod(t, cfg.CertFile, 0o666) // public: never checked
			chmod(t, cfg.KeyFile, tc.mode)
			if tc.link {
				data := filepath.Join(dir, "..data")
				if err := os.Mkdir(data, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(cfg.KeyFile, filepath.Join(data, "key.pem")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join("..data", "key.pem"), cfg.KeyFile); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Load(cfg, nil)
			if !tc.refuse {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				serves(t, s, der, "after Load")
				return
			}
			want := fmt.Sprintf("certs: key file %s has mode %#o; it must not be accessible by group or others (chmod 600", cfg.KeyFile, tc.mode)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("Load err = %v, want %q", err, want)
			}
		})
	}
}

// The periodic check applies the key file mode rule to every change, a chmod alone included:
// an exposed key is logged and the running certificate kept, and the renewal is served once
// the key is private again.
func TestReloadKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	cfg, first := pairConfig(t, dir, "one.example")
	s, err := Load(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	check := func(want []byte, step, logged string) {
		t.Helper()
		logs.Reset()
		s.lastCheck = time.Time{}
		serves(t, s, want, step)
		if logged == "" && logs.Len() != 0 || !strings.Contains(logs.String(), logged) {
			t.Errorf("%s: log %q, want one with %q", step, logs.String(), logged)
		}
	}
	refused := fmt.Sprintf("has mode %#o; it must not be accessible by group or others (chmod 600", os.FileMode(0o640))

	chmod(t, cfg.KeyFile, 0o640)
	check(first, "after chmod 640 of the key", refused)

	_, second := pairConfig(t, dir, "two.example") // rewrites key.pem in place: still 0640
	future := time.Now().Add(time.Minute)
	os.Chtimes(cfg.CertFile, future, future)
	os.Chtimes(cfg.KeyFile, future, future)
	check(first, "after a renewal whose key is 0640", refused)

	chmod(t, cfg.KeyFile, 0o600)
	check(second, "after chmod 600 of the renewed key", "")
}
