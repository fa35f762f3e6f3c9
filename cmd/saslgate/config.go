package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/internal/shared"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/discovery"
	"github.com/saslgate/saslgate/tls/certs"
)

// fileConfig is the whole configuration file; each package owns its section.
type fileConfig struct {
	Log       logConfig              `yaml:"log"`
	TLS       certs.Config           `yaml:"tls"`
	Listeners []proxy.ListenerConfig `yaml:"listeners"`
	Secrets   backends.SecretsConfig `yaml:"secrets"`
	Pools     []backends.PoolConfig  `yaml:"pools"`
	Routes    backends.RoutesConfig  `yaml:"routes"`
	Tokens    introspect.Config      `yaml:"tokens"`
	HTTP      discovery.Config       `yaml:"http"`
	Limits    proxy.Limits           `yaml:"limits"`
	Admin     metrics.AdminConfig    `yaml:"admin"`
	// Shared is the Valkey/Redis store replicas share state through; none by default.
	Shared shared.Config `yaml:"shared"`
	// Sections are the protocol sections ("imap:", "smtp:"), by protocol name, each of the
	// type its protocol's NewSection makes. They are not fields of the file's type: the
	// registry decides which there are (decodeConfig).
	Sections map[string]proxy.Section `yaml:"-"`
}

// uses reports whether a listener serves the protocol called name.
func (c *fileConfig) uses(name string) bool {
	return slices.ContainsFunc(c.Listeners, func(l proxy.ListenerConfig) bool { return l.Protocol == name })
}

// section is p's section: the file's, or an empty one when the file has none.
func (c *fileConfig) section(p proxy.Protocol) proxy.Section {
	if s := c.Sections[p.Name]; s != nil {
		return s
	}
	return p.NewSection()
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
	cfg, err := decodeConfig(data)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty configuration", path)
		}
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	cfg.Tokens.Protocols = protocolNames()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: invalid configuration:\n%w", path, err)
	}
	return cfg, nil
}

// decodeConfig decodes a configuration file strictly. Its protocol sections are the
// registry's, so the file's type is built here: fileConfig inline, plus one field per
// registered protocol, tagged with its name and of its section's type. The whole file is
// then one Decode with KnownFields, which is where yaml.v3 reports unknown keys, with their
// lines: a misspelt key inside a protocol section, and a section of a protocol this program
// does not serve, are errors like any other. (Decoding through yaml.Node instead would lose
// the check: Node.Decode has no KnownFields.)
func decodeConfig(data []byte) (*fileConfig, error) {
	fields := []reflect.StructField{{Name: "File", Type: reflect.TypeFor[fileConfig](), Tag: `yaml:",inline"`}}
	for i, p := range protocols {
		fields = append(fields, reflect.StructField{
			Name: fmt.Sprintf("Protocol%d", i),
			Type: reflect.TypeOf(p.NewSection()),
			Tag:  reflect.StructTag(fmt.Sprintf("yaml:%q", p.Name)),
		})
	}
	shape := reflect.StructOf(fields)
	doc := reflect.New(shape).Elem()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(doc.Addr().Interface()); err != nil {
		// An unknown top-level key is reported in the built type, which would print whole.
		if msg := err.Error(); strings.Contains(msg, shape.String()) {
			return nil, errors.New(strings.ReplaceAll(msg, shape.String(), reflect.TypeFor[fileConfig]().String()))
		}
		return nil, err
	}
	cfg := doc.Field(0).Addr().Interface().(*fileConfig)
	cfg.Sections = make(map[string]proxy.Section, len(protocols))
	for i, p := range protocols {
		// A section absent (or empty: "imap:") stays nil, and is an empty one.
		if f := doc.Field(i + 1); !f.IsZero() {
			cfg.Sections[p.Name] = f.Interface().(proxy.Section)
		} else {
			cfg.Sections[p.Name] = p.NewSection()
		}
	}
	return cfg, nil
}

// Validate checks every section and collects all problems.
func (c *fileConfig) Validate() error {
	errs := []error{c.Log.Validate(), c.TLS.Validate(), c.Tokens.Validate(), c.Limits.Validate()}
	if c.hasSecrets() || c.needsSecrets() {
		errs = append(errs, c.Secrets.Validate())
	}
	if len(c.Listeners) == 0 {
		errs = append(errs, errors.New("listeners: at least one listener is required"))
	}
	names := map[string]bool{}
	for i, l := range c.Listeners {
		errs = append(errs, l.Validate(fmt.Sprintf("listeners[%d]", i)))
		if _, ok := lookupProtocol(l.Protocol); !ok && l.Protocol != "" {
			errs = append(errs, fmt.Errorf("listeners[%d].protocol %q is not supported (want one of: %s)", i, l.Protocol, strings.Join(protocolNames(), ", ")))
		}
		if names[l.Name] {
			errs = append(errs, fmt.Errorf("listeners[%d].name %q is used twice", i, l.Name))
		}
		names[l.Name] = true
	}
	errs = append(errs, c.validateSections()...)
	errs = append(errs, c.validatePools()...)
	errs = append(errs, c.HTTP.Validate(), c.Admin.Validate(), c.Shared.Validate())
	return errors.Join(errs...)
}

// needsSecrets reports whether a backend the listeners use logs in with the user's own
// secret, and no route source can supply one, so that the secrets section is required.
func (c *fileConfig) needsSecrets() bool {
	for _, s := range c.Routes.Sources {
		if s.HTTP != nil || s.LDAP != nil && s.LDAP.SecretAttribute != "" {
			return false
		}
	}
	return slices.ContainsFunc(configuredBackends(c), func(b backendCheck) bool { return b.cfg.NeedsUserSecret() })
}

// implicitPool is the name of the one-member pool a protocol section's "backend:" stands for.
const implicitPool = "backend"

// poolConfigs are the pools of the protocols the listeners serve: the pools section's, and
// the one-member pool (without health checks) of each section that has a backend.
func (c *fileConfig) poolConfigs() []backends.PoolConfig {
	var out []backends.PoolConfig
	for _, pc := range c.Pools {
		if c.uses(pc.Protocol) {
			out = append(out, pc)
		}
	}
	for _, p := range protocols {
		if !c.uses(p.Name) {
			continue
		}
		if pool, be := c.section(p).Backends(); pool == "" {
			out = append(out, backends.PoolConfig{
				Name: implicitPool, Protocol: p.Name, Config: be,
				Members:     []backends.MemberConfig{{Address: be.Address}},
				HealthCheck: backends.HealthConfig{Disabled: true},
			})
		}
	}
	return out
}

// defaultPools maps each served protocol to its default pool's name.
func (c *fileConfig) defaultPools() map[string]string {
	m := map[string]string{}
	for _, p := range protocols {
		if c.uses(p.Name) {
			pool, _ := c.section(p).Backends()
			m[p.Name] = cmpOr(pool, implicitPool)
		}
	}
	return m
}

// validatePools checks the pools and routes sections and what names a pool.
func (c *fileConfig) validatePools() []error {
	errs := []error{c.Routes.Validate()}
	if c.Routes.Shared && !c.Shared.Enabled() {
		errs = append(errs, errors.New("routes.shared: needs the shared section (a Valkey/Redis store)"))
	}
	type key struct{ protocol, name string }
	seen := map[key]bool{}
	names := map[string]bool{}
	for i, pc := range c.Pools {
		where := fmt.Sprintf("pools[%d]", i)
		errs = append(errs, pc.Validate(where))
		if _, ok := lookupProtocol(pc.Protocol); !ok && pc.Protocol != "" {
			errs = append(errs, fmt.Errorf("%s: protocol %q is not supported (want one of: %s)", where, pc.Protocol, strings.Join(protocolNames(), ", ")))
		}
		if seen[key{pc.Protocol, pc.Name}] {
			errs = append(errs, fmt.Errorf("%s: %s pool %q is defined twice", where, pc.Protocol, pc.Name))
		}
		seen[key{pc.Protocol, pc.Name}] = true
		names[pc.Name] = true
	}
	for _, p := range protocols {
		if !c.uses(p.Name) {
			continue
		}
		if pool, _ := c.section(p).Backends(); pool != "" && !seen[key{p.Name, pool}] {
			errs = append(errs, fmt.Errorf("%s.pool: %q is not among the %s pools of the pools section", p.Name, pool, p.Name))
		}
	}
	for i, s := range c.Routes.Sources {
		if s.Hash != nil && s.Hash.Pool != "" && !names[s.Hash.Pool] {
			errs = append(errs, fmt.Errorf("routes.sources[%d]: hash: pool %q is not in the pools section", i, s.Hash.Pool))
		}
	}
	return errs
}

// hasSecrets reports whether the file has a secrets section.
func (c *fileConfig) hasSecrets() bool { return c.Secrets != backends.SecretsConfig{} }

// validateSections checks the protocol sections. A protocol's section is required, and
// checked, only when a listener serves it.
func (c *fileConfig) validateSections() []error {
	var errs []error
	for _, p := range protocols {
		if c.uses(p.Name) {
			errs = append(errs, c.section(p).Validate())
		}
	}
	return errs
}
