package imap

import (
	"errors"
	"fmt"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/proxy"
)

// Config is the IMAP section of the configuration file.
type Config struct {
	// Pool names the default pool of IMAP logins: the pool of users no route source knows
	// (the top-level "pools" and "routes" sections).
	Pool string `yaml:"pool"`
	// Backend is the shorthand for a one-member pool without health checks: the one IMAP
	// server saslgate logs in to. Set Pool or Backend, not both.
	Backend backends.Config `yaml:"backend"`
	// AllowTokenAsLoginPassword accepts an access token as the LOGIN
	// password, for clients that cannot do SASL OAuth. The token then travels
	// as a password would; off by default.
	AllowTokenAsLoginPassword bool `yaml:"allow_token_as_login_password"`
	// PreauthTimeout bounds the whole not-authenticated phase (default 60s).
	PreauthTimeout config.Duration `yaml:"preauth_timeout"`
	// ErrorReplyTimeout bounds the wait for the client's reply to an RFC 7628
	// error challenge; some clients never send it (default 5s).
	ErrorReplyTimeout config.Duration `yaml:"error_reply_timeout"`
	// MaxLineLength bounds a command line before authentication (default
	// 64 KiB: room for a 16 KiB token, base64-encoded, with its kvpairs).
	MaxLineLength int `yaml:"max_line_length"`
	// MaxLiteralSize bounds a literal before authentication (default 64 KiB).
	MaxLiteralSize int `yaml:"max_literal_size"`
	// MaxBadCommands is how many invalid commands a client may send before
	// authentication before it is disconnected (default 10).
	MaxBadCommands int `yaml:"max_bad_commands"`
}

// Defaults.
const (
	DefaultPreauthTimeout    = 60 * time.Second
	DefaultErrorReplyTimeout = 5 * time.Second
	DefaultMaxLineLength     = 64 << 10
	DefaultMaxLiteralSize    = 64 << 10
	DefaultMaxBadCommands    = 10
)

func (c Config) preauthTimeout() time.Duration { return c.PreauthTimeout.Or(DefaultPreauthTimeout) }
func (c Config) errorReplyTimeout() time.Duration {
	return c.ErrorReplyTimeout.Or(DefaultErrorReplyTimeout)
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, proxy.ValidateBackend("imap", c.Pool, c.Backend))
	if c.PreauthTimeout < 0 {
		errs = append(errs, errors.New("imap.preauth_timeout must not be negative"))
	}
	if c.ErrorReplyTimeout < 0 {
		errs = append(errs, errors.New("imap.error_reply_timeout must not be negative"))
	}
	if c.MaxLineLength != 0 && c.MaxLineLength < 1024 {
		errs = append(errs, fmt.Errorf("imap.max_line_length %d is below 1024", c.MaxLineLength))
	}
	if c.MaxLiteralSize < 0 {
		errs = append(errs, errors.New("imap.max_literal_size must not be negative"))
	}
	if c.MaxBadCommands < 0 {
		errs = append(errs, errors.New("imap.max_bad_commands must not be negative"))
	}
	return errors.Join(errs...)
}
