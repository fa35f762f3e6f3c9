package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/tls/certs"
)

// live is what a reload replaces under running sessions: token validation and backend
// secrets. The front ends hold it as their Validator and SecretSource; a session that has
// begun an authentication finishes it with the values it started with.
type live struct {
	validator atomic.Pointer[introspect.Validator]
	secrets   atomic.Pointer[secretSource]
	vopts     []introspect.Option // for every validator built (metrics observer)
	draining  atomic.Bool         // SIGTERM came: /readyz fails
}

func (l *live) notDraining(context.Context) error {
	if l.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

type secretSource struct{ backends.SecretSource }

// noSecrets is the SecretSource of a configuration without a secrets section.
type noSecrets struct{}

func (noSecrets) Secret(_ context.Context, user string) (backends.Secret, error) {
	return "", fmt.Errorf("%w %q: no secrets section is configured", backends.ErrUnknownUser, user)
}

func (l *live) Validate(ctx context.Context, r introspect.Request) (introspect.Identity, error) {
	return l.validator.Load().Validate(ctx, r)
}

func (l *live) Secret(ctx context.Context, user string) (backends.Secret, error) {
	return l.secrets.Load().Secret(ctx, user)
}

// Ready reports whether the current validator has every issuer's metadata and keys (/readyz).
func (l *live) Ready(ctx context.Context) error { return l.validator.Load().Ready(ctx) }

// newLive builds the validator and secret source cfg describes.
func newLive(ctx context.Context, cfg *fileConfig, logger *slog.Logger, vopts ...introspect.Option) (*live, error) {
	l := &live{vopts: vopts}
	v, s, err := l.build(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	l.validator.Store(v)
	l.secrets.Store(s)
	return l, nil
}

func (l *live) build(ctx context.Context, cfg *fileConfig, logger *slog.Logger) (*introspect.Validator, *secretSource, error) {
	v, err := introspect.New(ctx, cfg.Tokens, append([]introspect.Option{introspect.WithLogger(logger)}, l.vopts...)...)
	if err != nil {
		return nil, nil, err
	}
	if !cfg.hasSecrets() {
		// No backend in use needs a user's secret (loadConfig requires the section otherwise).
		return v, &secretSource{noSecrets{}}, nil
	}
	s, err := backends.NewSecretSource(cfg.Secrets, logger)
	if err != nil {
		return nil, nil, err
	}
	return v, &secretSource{s}, nil
}

// reload applies the configuration file at path to the running gateway (SIGHUP): the tokens
// section (issuers, policy; the validation cache starts empty), the secrets section and the
// TLS certificate, all or nothing. Sections that need new sockets or sessions (listeners, the
// protocol sections, limits, http, log) are compared and reported as needing a restart. A
// file that does not load is rejected and the running configuration kept.
func reload(ctx context.Context, path string, running *fileConfig, l *live, store *certs.Store, logger *slog.Logger) (*fileConfig, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return running, err
	}
	v, s, err := l.build(ctx, cfg, logger)
	if err != nil {
		return running, err
	}
	if err := store.Reload(cfg.TLS); err != nil {
		return running, err
	}
	old := l.validator.Swap(v)
	l.secrets.Store(s)
	old.Close()
	type section struct {
		name     string
		old, new any
	}
	sections := []section{{"listeners", running.Listeners, cfg.Listeners}, {"pools", running.Pools, cfg.Pools}, {"routes", running.Routes, cfg.Routes}, {"shared", running.Shared, cfg.Shared}}
	for _, p := range protocols {
		sections = append(sections, section{p.Name, running.section(p), cfg.section(p)})
	}
	sections = append(sections, []section{
		{"limits", running.Limits, cfg.Limits}, {"http", running.HTTP, cfg.HTTP}, {"log", running.Log, cfg.Log},
	}...)
	var restart []string
	for _, sec := range sections {
		if !reflect.DeepEqual(sec.old, sec.new) {
			restart = append(restart, sec.name)
		}
	}
	// What is not applied stays as it runs, so the next reload compares against that.
	applied := *running
	applied.Tokens, applied.Secrets, applied.TLS = cfg.Tokens, cfg.Secrets, cfg.TLS
	if len(restart) > 0 {
		logger.Warn("configuration reloaded; changed sections need a restart to apply", "path", path, "restart_needed", fmt.Sprint(restart))
	} else {
		logger.Info("configuration reloaded", "path", path)
	}
	return &applied, nil
}
