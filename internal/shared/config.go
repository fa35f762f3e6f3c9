package shared

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/internal/secretfile"
)

// Defaults of the shared section.
const (
	DefaultKeyPrefix = "saslgate:"
	DefaultTimeout   = 100 * time.Millisecond
)

// The values of Config.LimiterFail.
const (
	LimiterFailOpen   = "open"
	LimiterFailClosed = "closed"
)

// Config is the "shared:" section. With neither Address nor Sentinel.MasterName set there is
// no store and every replica keeps its state in memory (the default).
type Config struct {
	// Address is the store's host:port (Valkey or Redis, standalone).
	Address string `yaml:"address"`
	// Sentinel, instead of Address, finds the current primary through Redis Sentinel.
	Sentinel SentinelConfig `yaml:"sentinel"`
	TLS      TLSConfig      `yaml:"tls"`
	// Username is the ACL user (Redis 6+); empty: the default user.
	Username string `yaml:"username"`
	// PasswordFile holds the store's password (mode 0600 or 0400, see internal/secretfile);
	// a trailing newline is ignored.
	PasswordFile string `yaml:"password_file"`
	// DB is the logical database (standalone and Sentinel only).
	DB int `yaml:"db"`
	// KeyPrefix starts every key saslgate writes (default "saslgate:"). Fleets that must not
	// share state use different prefixes.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds each call to the store, connecting included (default 100ms). A call that
	// takes longer fails, and its caller falls back to local state.
	Timeout config.Duration `yaml:"timeout"`
	// LimiterFail says what the failed-authentication limiter does while the store is
	// unreachable: "open" (default) counts locally only; "closed" refuses every new
	// authentication with the temporary-failure answer until the store is back.
	LimiterFail string `yaml:"limiter_fail"`
}

// SentinelConfig names a Sentinel-monitored primary.
type SentinelConfig struct {
	MasterName string   `yaml:"master_name"`
	Addresses  []string `yaml:"addresses"`
}

// TLSConfig turns TLS to the store on.
type TLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the store's certificate (default: the system
	// pool).
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the store's certificate (default: the address's host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate: whoever is between saslgate and the store
	// can then read and forge its contents, cached token results and TLS ticket keys included.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Enabled reports whether a store is configured.
func (c Config) Enabled() bool { return c.Address != "" || c.Sentinel.MasterName != "" }

// FailClosed reports whether the limiter refuses authentications while the store is down.
func (c Config) FailClosed() bool { return c.LimiterFail == LimiterFailClosed }

func (c Config) timeout() time.Duration { return c.Timeout.Or(DefaultTimeout) }

func (c Config) keyPrefix() string {
	if c.KeyPrefix == "" {
		return DefaultKeyPrefix
	}
	return c.KeyPrefix
}

// maxPasswordSize bounds what is read of the password file.
const maxPasswordSize = 4096

// Validate names every bad field. It does not read files (that is New's job, at start).
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("shared."+format, a...)) }
	if !c.Enabled() {
		if c.PasswordFile != "" || c.Username != "" || c.TLS != (TLSConfig{}) || len(c.Sentinel.Addresses) > 0 ||
			c.KeyPrefix != "" || c.DB != 0 || c.Timeout != 0 || c.LimiterFail != "" {
			bad("address (or sentinel.master_name) is required when other shared settings are given")
		}
		return errors.Join(errs...)
	}
	if c.Address != "" && c.Sentinel.MasterName != "" {
		bad("address and sentinel.master_name are exclusive")
	}
	if c.Address != "" {
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			bad("address %q: want host:port", c.Address)
		}
	}
	if c.Sentinel.MasterName != "" && len(c.Sentinel.Addresses) == 0 {
		bad("sentinel.addresses: at least one sentinel host:port is required")
	}
	if c.Sentinel.MasterName == "" && len(c.Sentinel.Addresses) > 0 {
		bad("sentinel.master_name is required with sentinel.addresses")
	}
	for i, a := range c.Sentinel.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("sentinel.addresses[%d] %q: want host:port", i, a)
		}
	}
	if c.DB < 0 {
		bad("db must not be negative")
	}
	if c.Timeout < 0 {
		bad("timeout must not be negative")
	}
	if c.Timeout > config.Duration(5*time.Second) {
		bad("timeout %v: at most 5s (each login waits for it while the store is unreachable)", c.Timeout.D())
	}
	if strings.ContainsAny(c.KeyPrefix, " \r\n\x00") {
		bad("key_prefix must not contain spaces or control characters")
	}
	switch c.LimiterFail {
	case "", LimiterFailOpen, LimiterFailClosed:
	default:
		bad("limiter_fail %q: want open or closed", c.LimiterFail)
	}
	if !c.TLS.Enabled && (c.TLS.CAFile != "" || c.TLS.ServerName != "" || c.TLS.InsecureSkipVerify) {
		bad("tls.enabled must be true when tls settings are given")
	}
	return errors.Join(errs...)
}

// password reads PasswordFile under the secret file rule.
func (c Config) password() (string, error) {
	if c.PasswordFile == "" {
		return "", nil
	}
	b, _, err := secretfile.Read(c.PasswordFile, maxPasswordSize)
	if err != nil {
		return "", fmt.Errorf("shared.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// tlsConfig is the client TLS configuration, or nil without TLS.
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS.Enabled {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.TLS.ServerName,
		InsecureSkipVerify: c.TLS.InsecureSkipVerify,
	}
	if tc.ServerName == "" && c.Address != "" {
		tc.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("shared.tls.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("shared.tls.ca_file %s: no PEM certificate", c.TLS.CAFile)
		}
	}
	return tc, nil
}
