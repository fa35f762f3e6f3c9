package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/discovery"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/proxy/smtp"
	"github.com/saslgate/saslgate/tls/certs"
)

// fileConfig is the whole configuration file; each package owns its section.
type fileConfig struct {
	Log       logConfig              `yaml:"log"`
	TLS       certs.Config           `yaml:"tls"`
	Listeners []proxy.ListenerConfig `yaml:"listeners"`
	IMAP      imap.Config            `yaml:"imap"`
	SMTP      smtp.Config            `yaml:"smtp"`
	Secrets   backends.SecretsConfig `yaml:"secrets"`
	Tokens    introspect.Config      `yaml:"tokens"`
	HTTP      discovery.Config       `yaml:"http"`
	Limits    proxy.Limits           `yaml:"limits"`
	Admin     metrics.AdminConfig    `yaml:"admin"`
}

type logConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

func (l logConfig) Validate() error {
	var errs []error
	var lv slog.Level
	if l.Level != "" {
		if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
			errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", l.Level))
		}
	}
	if l.Format != "" && l.Format != "text" && l.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", l.Format))
	}
	return errors.Join(errs...)
}

func (l logConfig) logger(w io.Writer) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// loadConfig reads and strictly decodes path: an unknown or misspelt key is
// an error naming it and its line. It then validates the whole file and
// reports every problem at once.
func loadConfig(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty configuration", path)
		}
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: invalid configuration:\n%w", path, err)
	}
	return &cfg, nil
}

// Validate checks every section and collects all problems.
func (c *fileConfig) Validate() error {
	errs := []error{c.Log.Validate(), c.TLS.Validate(), c.Secrets.Validate(), c.Tokens.Validate(), c.Limits.Validate()}
	if len(c.Listeners) == 0 {
		errs = append(errs, errors.New("listeners: at least one listener is required"))
	}
	names := map[string]bool{}
	for i, l := range c.Listeners {
		errs = append(errs, l.Validate(fmt.Sprintf("listeners[%d]", i)))
		if names[l.Name] {
			errs = append(errs, fmt.Errorf("listeners[%d].name %q is used twice", i, l.Name))
		}
		names[l.Name] = true
	}
	// A protocol's section is required, and checked, only when a listener serves it.
	if slices.ContainsFunc(c.Listeners, func(l proxy.ListenerConfig) bool { return l.Protocol == "imap" }) {
		errs = append(errs, c.IMAP.Validate())
	}
	if slices.ContainsFunc(c.Listeners, func(l proxy.ListenerConfig) bool { return l.Protocol == "smtp" }) {
		errs = append(errs, c.SMTP.Validate())
	}
	errs = append(errs, c.HTTP.Validate(), c.Admin.Validate())
	return errors.Join(errs...)
}
