package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/metrics"
)

// backendDialTimeout bounds the readiness probe's TCP dial to each backend.
const backendDialTimeout = 2 * time.Second

// readyChecks are /readyz's conditions: not draining (so a load balancer stops sending new
// clients during SIGTERM's drain period), the issuers' keys or endpoints are loaded, and every
// pool a listener uses has a member up: by its health checks, or, in a pool without them (a
// section's one backend), by a TCP connection to each member.
func readyChecks(pools *backends.Pools, v *live) []metrics.Check {
	checks := []metrics.Check{{Name: "draining", Run: v.notDraining}, {Name: "issuers", Run: v.Ready}}
	for _, p := range pools.All() {
		name := fmt.Sprintf("%s pool %s", p.Protocol, p.Name)
		if !p.HealthChecked() {
			for _, m := range p.Members {
				checks = append(checks, metrics.DialCheck(name+" member "+m.Address(), m.Address(), backendDialTimeout))
			}
			continue
		}
		checks = append(checks, metrics.Check{Name: name, Run: func(context.Context) error {
			up := len(p.Healthy())
			if up == 0 {
				return fmt.Errorf("none of %d members is up", len(p.Members))
			}
			return nil
		}})
	}
	return checks
}

// startAdmin binds the admin listener (the "admin" section: /metrics, /healthz, /readyz) and
// serves it in the background; the caller shuts the server down. extra are readiness checks
// beyond readyChecks' (the shared store's). It returns nil, nil when the section is not
// configured.
func startAdmin(cfg *fileConfig, pools *backends.Pools, m *metrics.Metrics, v *live, extra []metrics.Check, logger *slog.Logger, errc chan<- error) (*http.Server, net.Addr, error) {
	if !cfg.Admin.Enabled() {
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Admin.Address)
	if err != nil {
		return nil, nil, fmt.Errorf("admin: %w", err)
	}
	srv := &http.Server{
		Handler:           m.Handler(append(readyChecks(pools, v), extra...), logger),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("listening", "listener", "admin", "protocol", "http", "address", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("listener failed", "listener", "admin", "reason", err)
			errc <- err
		}
	}()
	return srv, ln.Addr(), nil
}
