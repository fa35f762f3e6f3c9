package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
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
	h, err := discovery.New(cfg.HTTP, cfg.Listeners, cfg.Tokens.Issuers, issuerMetadata, logger)
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
	c, err := issuerHTTPClient(ic)
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

// issuerHTTPClient is an HTTP client honouring an issuer's ca_file, insecure_skip_verify and
// timeout, as the gateway's validator does.
func issuerHTTPClient(ic introspect.IssuerConfig) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if ic.CAFile != "" || ic.InsecureSkipVerify {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: ic.InsecureSkipVerify}
	}
	if ic.CAFile != "" {
		pem, err := os.ReadFile(ic.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates", ic.CAFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: t, Timeout: ic.Timeout.Or(introspect.DefaultTimeout)}, nil
}
