package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/internal/shared"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/tls/certs"
)

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/saslgate/saslgate.yaml", "configuration `file`")
	drain := fs.Duration("shutdown-timeout", 30*time.Second, "how long open sessions may go on after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	logger := cfg.Log.logger(stderr)
	store, err := certs.Load(cfg.TLS, logger)
	if err != nil {
		return err
	}
	g, err := startGateway(ctx, cfg, store, logger)
	if err != nil {
		return err
	}
	logger.Info("saslgate started", "version", versionString())
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	running := cfg
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err = <-g.errc:
			break wait
		case <-hup:
			next, rerr := reload(ctx, *path, running, g.live, store, logger)
			if rerr != nil {
				logger.Error("configuration reload rejected; the running configuration is kept", "path", *path, "reason", rerr)
			}
			running = next
		}
	}
	logger.Info("shutting down", "timeout", *drain)
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	return errors.Join(err, g.shutdown(sctx))
}

// gateway is a running set of listeners.
type gateway struct {
	live    *live // token validation and secrets, replaced by reload
	router  *backends.Router
	stop    context.CancelFunc // ends the health checks
	servers []proxy.Server
	http    *http.Server        // client auto-configuration; nil when not configured
	admin   *http.Server        // /metrics, /healthz, /readyz; nil when not configured
	shared  *shared.Store       // the store replicas share state through; nil when not configured
	addrs   map[string]net.Addr // listener name (and "http", "admin") → bound address
	errc    chan error
}

// startGateway wires the packages together and starts every listener. All
// sockets are bound before any is served, so a bad address fails the start.
func startGateway(ctx context.Context, cfg *fileConfig, store *certs.Store, logger *slog.Logger) (*gateway, error) {
	// A master secret is read at every backend login; one that cannot be read stops the start
	// rather than failing every login.
	for _, b := range configuredBackends(cfg) {
		if b.cfg.MasterSecretFile != "" {
			if _, err := b.cfg.MasterSecret(); err != nil {
				return nil, fmt.Errorf("%s pool %s, member %s: %w", b.protocol, b.pool, b.cfg.Address, err)
			}
		}
	}
	// Metrics are collected only when the admin listener can serve them.
	var m *metrics.Metrics
	var vopts []introspect.Option
	if cfg.Admin.Enabled() {
		m = metrics.New(metrics.Labels{Mechanisms: proxy.Mechanisms, Results: proxy.Results})
		vopts = append(vopts, introspect.WithObserver(m))
	}
	st, ready, err := startShared(cfg, m, logger)
	if err != nil {
		return nil, err
	}
	if st != nil {
		vopts = append(vopts, introspect.WithSharedCache(st))
	}
	lv, err := newLive(ctx, cfg, logger, vopts...)
	if err != nil {
		return nil, err
	}
	g := &gateway{live: lv, shared: st, addrs: map[string]net.Addr{}, errc: make(chan error, len(cfg.Listeners)+2)}
	// One login pipeline for all listeners: a client guessing on 993 is slowed on 465 too,
	// and a backend's refusal is remembered whichever door the user came through.
	var robs backends.RouteObserver
	if m != nil {
		robs = m
	}
	router, err := newRouter(cfg, logger, robs)
	if err != nil {
		return nil, err
	}
	if st != nil && cfg.Routes.Shared {
		router.Share(st)
	}
	g.router = router
	login := &proxy.Login{Validator: lv, Secrets: lv, Router: router}
	if m != nil {
		login.Members = m
	}
	if fl := proxy.NewFailureLimiter(cfg.Limits, nil); fl != nil {
		login.Limiter = fl
		if st != nil {
			login.Limiter = &proxy.SharedLimiter{Local: fl, Store: st, FailClosed: cfg.Shared.FailClosed()}
		}
	}
	if st != nil {
		login.Refusals = st
	}
	var lns []net.Listener
	for _, l := range cfg.Listeners {
		p, ok := lookupProtocol(l.Protocol)
		// client_ca_file is read here so that a bad one stops the start, not one listener.
		_, err := l.ServerTLS(store.TLSConfig())
		if !ok {
			err = fmt.Errorf("listener %s: protocol %q is not supported", l.Name, l.Protocol)
		}
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, err
		}
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		lns = append(lns, ln)
		g.addrs[l.Name] = ln.Addr()
		g.servers = append(g.servers, p.NewServer(proxy.ServerDeps{
			Listener:  l,
			Section:   cfg.section(p),
			TLSConfig: store.TLSConfig(),
			Login:     login,
			Limits:    cfg.Limits,
			Logger:    logger,
			Observer:  observer(m, l),
		}))
	}
	httpSrv, httpAddr, err := startHTTP(cfg, store, logger, g.errc)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	if httpSrv != nil {
		g.http, g.addrs["http"] = httpSrv, httpAddr
	}
	adminSrv, adminAddr, err := startAdmin(cfg, router.Pools(), m, lv, ready, logger, g.errc)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		if httpSrv != nil {
			httpSrv.Close()
		}
		return nil, err
	}
	if adminSrv != nil {
		g.admin, g.addrs["admin"] = adminSrv, adminAddr
	}
	// Health checks run until shutdown has drained the sessions.
	hctx, stop := context.WithCancel(context.Background())
	g.stop = stop
	router.Pools().Start(hctx, logger, robs)
	if st != nil {
		go store.SyncTickets(hctx, st, ticketSyncInterval, logger)
	}
	for i, srv := range g.servers {
		l := cfg.Listeners[i]
		logger.Info("listening", "listener", l.Name, "protocol", l.Protocol, "tls", l.TLS, "address", lns[i].Addr().String())
		go func() {
			if err := srv.Serve(lns[i]); !errors.Is(err, proxy.ErrServerClosed) {
				logger.Error("listener failed", "listener", l.Name, "reason", err)
				g.errc <- err
			}
		}()
	}
	return g, nil
}

// shutdown stops every listener and waits for sessions until ctx is done.
func (g *gateway) shutdown(ctx context.Context) error {
	g.live.draining.Store(true)
	if g.shared != nil {
		defer g.shared.Close()
	}
	defer g.router.Close()
	defer g.stop()
	errs := make(chan error, len(g.servers))
	for _, srv := range g.servers {
		go func() { errs <- srv.Shutdown(ctx) }()
	}
	var all []error
	if g.http != nil {
		if err := g.http.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			all = append(all, err)
		}
	}
	for range g.servers {
		if err := <-errs; err != nil && !errors.Is(err, context.DeadlineExceeded) {
			all = append(all, err)
		}
	}
	// Last, so that the drain can be watched.
	if g.admin != nil {
		if err := g.admin.Shutdown(ctx); err != nil {
			g.admin.Close()
			if !errors.Is(err, context.DeadlineExceeded) {
				all = append(all, err)
			}
		}
	}
	return errors.Join(all...)
}

var (
	_ introspect.Observer  = (*metrics.Metrics)(nil)
	_ proxy.Observer       = (*metrics.Listener)(nil)
	_ proxy.MemberObserver = (*metrics.Metrics)(nil)
	_ shared.Observer      = (*metrics.Metrics)(nil)
)

// ticketSyncInterval is how often the TLS session-ticket keys are read from the shared store.
const ticketSyncInterval = time.Minute

// startShared opens the shared store cfg configures (nil without one) and returns its
// readiness checks. Only a limiter that fails closed makes /readyz depend on the store: that
// replica refuses every authentication while the store is down. Otherwise every use falls
// back to local state, and failing /readyz would take the whole fleet out of its load
// balancer for an outage that costs only sharing; the store's health is then in the
// saslgate_shared_* metrics and the log.
func startShared(cfg *fileConfig, m *metrics.Metrics, logger *slog.Logger) (*shared.Store, []metrics.Check, error) {
	if !cfg.Shared.Enabled() {
		return nil, nil, nil
	}
	opts := []shared.Option{shared.WithLogger(logger)}
	if m != nil {
		opts = append(opts, shared.WithObserver(m))
	}
	st, err := shared.New(cfg.Shared, opts...)
	if err != nil {
		return nil, nil, err
	}
	var ready []metrics.Check
	if cfg.Shared.FailClosed() {
		ready = append(ready, metrics.Check{Name: "shared store", Run: st.Ready})
	}
	return st, ready, nil
}

// observer is the listener's metrics, or nil (no metrics) when m is nil.
func observer(m *metrics.Metrics, l proxy.ListenerConfig) proxy.Observer {
	if m == nil {
		return nil
	}
	return m.Listener(l.Name, l.Protocol)
}
