package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Config names the PEM files of a certificate chain and its private key.
type Config struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
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
	cfg    Config
	logger *slog.Logger

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
	s := &Store{cfg: cfg, logger: logger}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// FromCertificate returns a Store serving a fixed certificate (demo and tests).
func FromCertificate(c tls.Certificate) *Store {
	return &Store{cert: &c, lastCheck: time.Now().Add(1 << 62), logger: slog.New(slog.DiscardHandler)}
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
	c, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	s.cert, s.certStat, s.keyStat = &c, cst, kst
	return nil
}

// unchanged reports whether a file is still the one last loaded: same file (a rename into
// place, as certbot and cert-manager's symlink swap do, makes a new one), modification time
// and size. Modification time alone misses a replacement written within the file system's
// timestamp granularity of the old file.
func unchanged(old, now os.FileInfo) bool {
	return old != nil && os.SameFile(old, now) && old.ModTime().Equal(now.ModTime()) && old.Size() == now.Size()
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
// TLS 1.2 is the floor (RFC 8314 §4.1 / RFC 9325).
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.Certificate(), nil
		},
	}
}
