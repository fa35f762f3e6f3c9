package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/saslgate/saslgate/internal/idpmeta"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/discovery"
	"github.com/saslgate/saslgate/tls/certs"
)

// startHTTP binds the client auto-configuration listener (the "http" section) and serves it
// in the background; the caller shuts the server down. It returns nil, nil when the section
// is not configured.
func startHTTP(cfg *fileConfig, store *certs.Store, logger *slog.Logger, errc chan<- error) (*http.Server, net.Addr, error) {
	if !cfg.HTTP.Enabled() {
		return nil, nil, nil
	}
	h, err := discovery.New(cfg.HTTP, cfg.Listeners, protocols, cfg.Tokens.Issuers, issuerMetadata, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("http: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Address)
	if err != nil {
		return nil, nil, fmt.Errorf("http: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if cfg.HTTP.TLS {
		srv.TLSConfig = store.TLSConfig()
		scheme = "https"
	}
	logger.Info("listening", "listener", "http", "protocol", scheme, "address", ln.Addr().String(), "announces", h.String())
	go func() {
		var err error
		if cfg.HTTP.TLS {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			logger.Error("listener failed", "listener", "http", "reason", err)
			errc <- err
		}
	}()
	return srv, ln.Addr(), nil
}

// issuerMetadata reads an issuer's metadata with the issuer's own TLS settings.
func issuerMetadata(ctx context.Context, ic introspect.IssuerConfig) (*idpmeta.Metadata, error) {
	c, err := introspect.NewHTTPClient(ic)
	if err != nil {
		return nil, err
	}
	return idpmeta.Fetch(ctx, c, discoveryURL(ic), ic.Issuer)
}

func discoveryURL(ic introspect.IssuerConfig) string {
	if ic.DiscoveryURL != "" {
		return ic.DiscoveryURL
	}
	return idpmeta.DiscoveryURL(ic.Issuer)
}
