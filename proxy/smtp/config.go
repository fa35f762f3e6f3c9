package smtp

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/proxy"
)

// Sender policies, the values of Config.SenderPolicy.
const (
	// SenderAny relays any envelope sender: the backend enforces its own rules (Postfix:
	// reject_sender_login_mismatch). The default.
	SenderAny = "any"
	// SenderToken relays only the token's user, when it is an address, and its SenderAliases.
	SenderToken = "token"
)

// Config is the SMTP section of the configuration file.
type Config struct {
	// Pool names the default pool of SMTP logins: the pool of users no route source knows
	// (the top-level "pools" and "routes" sections). Its members' EHLO decides the extensions
	// saslgate announces.
	Pool string `yaml:"pool"`
	// Backend is the shorthand for a one-member pool without health checks: the one
	// submission server saslgate logs in to (Postfix, Dovecot submission…). Set Pool or
	// Backend, not both.
	Backend backends.Config `yaml:"backend"`
	// SenderPolicy is SenderAny (default) or SenderToken.
	SenderPolicy string `yaml:"sender_policy"`
	// SenderAliases lists, per mapped user, the further envelope senders SenderToken allows.
	SenderAliases map[string][]string `yaml:"sender_aliases"`
	// PreauthTimeout bounds the whole time before a successful AUTH (default 60s).
	PreauthTimeout config.Duration `yaml:"preauth_timeout"`
	// IdleTimeout bounds each wait for the client after AUTH (default 5m, RFC 5321
	// §4.5.3.2.7); it also bounds each write to the client.
	IdleTimeout config.Duration `yaml:"idle_timeout"`
	// ErrorReplyTimeout bounds the wait for the client's reply to an RFC 7628 error
	// challenge; a client silent that long gets 535 and is disconnected (default 5s).
	ErrorReplyTimeout config.Duration `yaml:"error_reply_timeout"`
	// MaxLineLength bounds every command line (default 64 KiB: room for a 16 KiB token,
	// base64-encoded, with its kvpairs, on the AUTH line).
	MaxLineLength int `yaml:"max_line_length"`
	// MaxMessageBytes bounds a message, and is announced as SIZE (RFC 1870). 0 means the
	// backend's SIZE (no limit when it announces none); otherwise the smaller of the two is
	// used, as the backend refuses anything larger than its own.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// Hostname is the name in saslgate's greeting; default the listener's public_host, else
	// the machine's host name.
	Hostname string `yaml:"hostname"`
	// ExtensionsRefresh is how often the backend's EHLO is probed again to learn its
	// extensions (default 10m; after a failed probe, every 30s).
	ExtensionsRefresh config.Duration `yaml:"extensions_refresh"`
}

// Defaults.
const (
	DefaultPreauthTimeout    = 60 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultErrorReplyTimeout = 5 * time.Second
	DefaultMaxLineLength     = 64 << 10
	DefaultExtensionsRefresh = 10 * time.Minute
	// probeRetry is the probe interval while the backend cannot be probed.
	probeRetry = 30 * time.Second
)

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("smtp."+format, args...)) }
	errs = append(errs, proxy.ValidateBackend("smtp", c.Pool, c.Backend))
	switch c.SenderPolicy {
	case "", SenderAny, SenderToken:
	default:
		add("sender_policy %q: want %q or %q", c.SenderPolicy, SenderAny, SenderToken)
	}
	if len(c.SenderAliases) > 0 && c.SenderPolicy != SenderToken {
		add("sender_aliases: only used with sender_policy %q", SenderToken)
	}
	for _, user := range slices.Sorted(maps.Keys(c.SenderAliases)) {
		for _, a := range c.SenderAliases[user] {
			if a == "" || strings.ContainsAny(a, " <>\r\n\x00") {
				add("sender_aliases[%q]: %q is not an address", user, a)
			}
		}
	}
	for _, d := range []struct {
		name string
		d    config.Duration
	}{
		{"preauth_timeout", c.PreauthTimeout}, {"idle_timeout", c.IdleTimeout},
		{"error_reply_timeout", c.ErrorReplyTimeout}, {"extensions_refresh", c.ExtensionsRefresh},
	} {
		if d.d < 0 {
			add("%s must not be negative", d.name)
		}
	}
	if c.MaxLineLength != 0 && c.MaxLineLength < 1024 {
		add("max_line_length %d is below 1024", c.MaxLineLength)
	}
	if c.MaxMessageBytes < 0 {
		add("max_message_bytes must not be negative")
	}
	if strings.ContainsAny(c.Hostname, " \t\r\n\x00") {
		add("hostname %q contains white space or control characters", c.Hostname)
	}
	return errors.Join(errs...)
}

func (c Config) maxLineLength() int {
	if c.MaxLineLength == 0 {
		return DefaultMaxLineLength
	}
	return c.MaxLineLength
}

// hostname is the greeting name: Hostname, else publicHost, else the machine's name.
func (c Config) hostname(publicHost string) string {
	for _, h := range []string{c.Hostname, publicHost} {
		if h != "" {
			return h
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// maxMessageBytes is the message size limit given the backend's SIZE (0: none).
func (c Config) maxMessageBytes(backendSize int64) int64 {
	if c.MaxMessageBytes == 0 || backendSize != 0 && backendSize < c.MaxMessageBytes {
		return backendSize
	}
	return c.MaxMessageBytes
}
