//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // the twin's reason to exist
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/tls/certs"
)

// twinConfig mirrors cmd/saslgate's file format (each package owns its
// section), so the twin reads the very file `saslgate serve` reads.
type twinConfig struct {
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	TLS       certs.Config           `yaml:"tls"`
	Listeners []proxy.ListenerConfig `yaml:"listeners"`
	IMAP      imap.Config            `yaml:"imap"`
	Secrets   backends.SecretsConfig `yaml:"secrets"`
	Tokens    introspect.Config      `yaml:"tokens"`
	Limits    proxy.Limits           `yaml:"limits"`
}

// twinMain is `imapbench twin`: the IMAP listeners of `saslgate serve`,
// wired from the same packages the same way (cmd/saslgate's startGateway),
// plus /debug/pprof and /debug/vars on a loopback port. cmd/saslgate is a
// main package and exposes no profiling endpoint, so this is how the bench
// profiles the proxy while Dovecot, nginx and the clients run as separate
// processes.
func twinMain(args []string) error {
	fs := flag.NewFlagSet("twin", flag.ContinueOnError)
	path := fs.String("config", "", "saslgate configuration `file`")
	pprofAddr := fs.String("pprof", "127.0.0.1:0", "pprof listen `address`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	var cfg twinConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(cfg.Log.Level))
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	store, err := certs.Load(cfg.TLS, logger)
	if err != nil {
		return err
	}
	validator, err := introspect.New(ctx, cfg.Tokens, introspect.WithLogger(logger))
	if err != nil {
		return err
	}
	secrets, err := backends.NewSecretSource(cfg.Secrets, logger)
	if err != nil {
		return err
	}
	expvar.Publish("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
	pln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		return err
	}
	go http.Serve(pln, nil)

	errc := make(chan error, len(cfg.Listeners))
	var servers []*imap.Server
	for _, l := range cfg.Listeners {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			return err
		}
		srv := &imap.Server{
			Listener:  l,
			Config:    cfg.IMAP,
			TLSConfig: store.TLSConfig(),
			Login:     &proxy.Login{Validator: validator, Secrets: secrets, Router: backends.Single("imap", cfg.IMAP.Backend)},
			Limits:    cfg.Limits,
			Logger:    logger,
		}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, imap.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(sctx)
	}
	return err
}
