package sieve

import (
	"errors"
	"fmt"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/proxy"
)

// Config is the ManageSieve section of the configuration file ("sieve:").
type Config struct {
	// Pool names the default pool of ManageSieve logins: the pool of users no route source
	// knows (the top-level "pools" and "routes" sections). Its members' capabilities are the
	// ones saslgate announces.
	Pool string `yaml:"pool"`
	// Backend is the shorthand for a one-member pool without health checks: the one
	// ManageSieve server (Dovecot Pigeonhole, port 4190) saslgate logs in to. Set Pool or
	// Backend, not both.
	Backend backends.Config `yaml:"backend"`
	// PreauthTimeout bounds the whole not-authenticated phase (default 60s).
	PreauthTimeout config.Duration `yaml:"preauth_timeout"`
	// ErrorReplyTimeout bounds the wait for the client's reply to an RFC 7628 error
	// challenge; some clients never send it (default 5s).
	ErrorReplyTimeout config.Duration `yaml:"error_reply_timeout"`
	// MaxLineLength bounds a command line before authentication (default 64 KiB: room for a
	// 16 KiB token, base64-encoded, with its kvpairs, in a quoted string).
	MaxLineLength int `yaml:"max_line_length"`
	// MaxLiteralSize bounds a literal before authentication (default 64 KiB).
	MaxLiteralSize int `yaml:"max_literal_size"`
	// MaxBadCommands is how many invalid commands a client may send before authentication
	// before it is disconnected (default 10).
	MaxBadCommands int `yaml:"max_bad_commands"`
	// CapabilitiesRefresh is how often the backend's capabilities are read again (default
	// 10m; after a failed probe, every 30s).
	CapabilitiesRefresh config.Duration `yaml:"capabilities_refresh"`
}

// Defaults.
const (
	DefaultPreauthTimeout      = 60 * time.Second
	DefaultErrorReplyTimeout   = 5 * time.Second
	DefaultMaxLineLength       = 64 << 10
	DefaultMaxLiteralSize      = 64 << 10
	DefaultMaxBadCommands      = 10
	DefaultCapabilitiesRefresh = 10 * time.Minute
	// probeRetry is the probe interval while the backend cannot be probed.
	probeRetry = 30 * time.Second
)

func (c Config) preauthTimeout() time.Duration { return c.PreauthTimeout.Or(DefaultPreauthTimeout) }
func (c Config) errorReplyTimeout() time.Duration {
	return c.ErrorReplyTimeout.Or(DefaultErrorReplyTimeout)
}
func (c Config) maxLineLength() int  { return orInt(c.MaxLineLength, DefaultMaxLineLength) }
func (c Config) maxLiteralSize() int { return orInt(c.MaxLiteralSize, DefaultMaxLiteralSize) }
func (c Config) maxBadCommands() int { return orInt(c.MaxBadCommands, DefaultMaxBadCommands) }

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, proxy.ValidateBackend("sieve", c.Pool, c.Backend))
	if c.Backend.Login == backends.LoginXClient {
		errs = append(errs, errors.New(`sieve.backend.login: "xclient" is for SMTP backends`))
	}
	for _, d := range []struct {
		name string
		d    config.Duration
	}{
		{"preauth_timeout", c.PreauthTimeout}, {"error_reply_timeout", c.ErrorReplyTimeout},
		{"capabilities_refresh", c.CapabilitiesRefresh},
	} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("sieve.%s must not be negative", d.name))
		}
	}
	if c.MaxLineLength != 0 && c.MaxLineLength < 1024 {
		errs = append(errs, fmt.Errorf("sieve.max_line_length %d is below 1024", c.MaxLineLength))
	}
	if c.MaxLiteralSize < 0 {
		errs = append(errs, errors.New("sieve.max_literal_size must not be negative"))
	}
	if c.MaxBadCommands < 0 {
		errs = append(errs, errors.New("sieve.max_bad_commands must not be negative"))
	}
	return errors.Join(errs...)
}
