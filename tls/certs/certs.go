package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/saslgate/saslgate/internal/secretfile"
)

// Config names the PEM files of a certificate chain and its private key.
type Config struct {
	CertFile string `yaml:"cert_file"`
	// KeyFile must not be accessible by group or others (mode 0600 or 0400), the rule for every
	// secret file saslgate reads; a key file with a wider mode is refused at Load and at every
	// reload.
	KeyFile string `yaml:"key_file"`
}

// Validate reports missing fields.
func (c Config) Validate() error {
	var errs []error
	if c.CertFile == "" {
		errs = append(errs, errors.New("tls.cert_file is required"))
	}
	if c.KeyFile == "" {
		errs = append(errs, errors.New("tls.key_file is required"))
	}
	return errors.Join(errs...)
}

// checkEvery bounds how often the files are stat'ed on handshakes.
const checkEvery = time.Second

// Store holds the current certificate and swaps in a new one when the files
// change. A broken replacement is logged and the previous certificate kept.
type Store struct {
	cfg     Config
	logger  *slog.Logger
	tickets *tickets // session-ticket keys of every TLSConfig (tickets.go)

	mu        sync.Mutex
	cert      *tls.Certificate
	certStat  os.FileInfo // of the files the certificate came from
	keyStat   os.FileInfo
	lastCheck time.Time
}

// Load reads the certificate and key once; it fails if they do not load.
func Load(cfg Config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, logger: logger, tickets: newTickets(nil)}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// FromCertificate returns a Store serving a fixed certificate (demo and tests).
func FromCertificate(c tls.Certificate) *Store {
	return &Store{cert: &c, lastCheck: time.Now().Add(1 << 62), logger: slog.New(slog.DiscardHandler), tickets: newTickets(nil)}
}

func (s *Store) reload() error {
	cst, err := os.Stat(s.cfg.CertFile)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	kst, err := os.Stat(s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if s.cert != nil && unchanged(s.certStat, cst) && unchanged(s.keyStat, kst) {
		return nil
	}
	certPEM, cst, err := readFile(s.cfg.CertFile, false)
	if err != nil {
		return err
	}
	keyPEM, kst, err := readFile(s.cfg.KeyFile, true)
	if err != nil {
		return err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	s.cert, s.certStat, s.keyStat = &c, cst, kst
	return nil
}

// readFile reads a PEM file and returns it with the FileInfo of the descriptor it was read
// from. The key file is a secret file: it is read under secretfile's rule, like every other
// secret of saslgate.
func readFile(path string, private bool) ([]byte, os.FileInfo, error) {
	if private {
		b, fi, err := secretfile.Read(path, maxPEMSize)
		if err != nil {
			return nil, nil, fmt.Errorf("certs: key file %w", err)
		}
		return b, fi, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	if len(b) > maxPEMSize {
		return nil, nil, fmt.Errorf("certs: %s is larger than %d bytes", path, maxPEMSize)
	}
	return b, fi, nil
}

// maxPEMSize bounds what is read of a certificate chain or key file.
const maxPEMSize = 1 << 20

// unchanged reports whether a file is still the one last loaded: same file (a rename into
// place, as certbot and cert-manager's symlink swap do, makes a new one), modification time,
// size and mode. Modification time alone misses a replacement written within the file
// system's timestamp granularity of the old file, and a chmod, which must be checked again.
func unchanged(old, now os.FileInfo) bool {
	return old != nil && os.SameFile(old, now) && old.ModTime().Equal(now.ModTime()) &&
		old.Size() == now.Size() && old.Mode() == now.Mode()
}

// Reload reads cfg's certificate and key now, whether or not the files changed (SIGHUP), and
// serves them from the next handshake on; cfg may name other files than before. On error the
// current certificate and files stay.
func (s *Store) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := &Store{cfg: cfg, logger: s.logger}
	if err := next.reload(); err != nil {
		return err
	}
	s.cfg, s.cert, s.certStat, s.keyStat, s.lastCheck = cfg, next.cert, next.certStat, next.keyStat, time.Now()
	return nil
}

// Certificate returns the current certificate, reloading it first when the
// files changed since the last check.
func (s *Store) Certificate() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.lastCheck) >= checkEvery {
		s.lastCheck = now
		if err := s.reload(); err != nil {
			s.logger.Error("certificate reload failed; keeping the current one", "reason", err)
		}
	}
	return s.cert
}

// TLSConfig returns a server configuration that serves the current certificate.
// TLS 1.2 is the floor (RFC 8314 §4.1 / RFC 9325). Every configuration of one Store seals
// session tickets with the same keys (tickets.go), clones included, so a session resumes on
// any listener, after a reload, and with SyncTickets on any replica.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.Certificate(), nil
		},
		WrapSession:   s.tickets.wrap,
		UnwrapSession: s.tickets.unwrap,
	}
}
