package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminConfig is the admin section of the configuration: the HTTP listener serving /metrics,
// /healthz and /readyz, meant for a private address (loopback, a pod network), never a mail
// port. It has no authentication and no TLS.
type AdminConfig struct {
	// Address is host:port to listen on; empty disables the listener. The host must be a
	// loopback or private address (127.0.0.0/8, ::1, 10/8, 172.16/12, 192.168/16, fc00::/7,
	// link-local) or "localhost", unless InsecurePublicAddress is set.
	Address string `yaml:"address"`
	// InsecurePublicAddress allows any other host, all interfaces ("0.0.0.0", "[::]", "")
	// included: the metrics and readiness of the gateway, unauthenticated, for anyone who can
	// reach the address. Set it only where the network itself is private (a container's or
	// pod's network, behind a firewall).
	InsecurePublicAddress bool `yaml:"insecure_public_address"`
}

// Enabled reports whether the admin listener is configured.
func (c AdminConfig) Enabled() bool { return c.Address != "" }

// Validate names the bad field.
func (c AdminConfig) Validate() error {
	if c.Address == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("admin.address %q: want host:port", c.Address)
	}
	if c.InsecurePublicAddress || host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast()) {
		return fmt.Errorf("admin.address %q: the admin listener has no authentication; bind it to a loopback or private address, or set admin.insecure_public_address: true where the network is private", c.Address)
	}
	return nil
}

// Check is one readiness condition of /readyz.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Readiness timing: a probe waits at most CheckTimeout, and a check's result is reused for
// CheckCacheFor, so frequent probes (every kubelet, every load balancer) cost the identity
// providers and backends nothing more.
const (
	CheckTimeout  = 3 * time.Second
	CheckCacheFor = 5 * time.Second
)

// DialCheck is a Check that a TCP connection to addr opens within timeout; it is closed at
// once, before any protocol is spoken.
func DialCheck(name, addr string, timeout time.Duration) Check {
	return Check{Name: name, Run: func(ctx context.Context) error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}}
}

// Handler serves the admin endpoints: GET /metrics (m's registry, Prometheus text or
// OpenMetrics), /healthz (200 "ok" while the process serves HTTP at all) and /readyz (200
// "ok" when every check passes, else 503 with one "name: reason" line per failed check). m
// must not be nil.
func (m *Metrics) Handler(checks []Check, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	r := &readiness{checks: make([]*cachedCheck, len(checks))}
	for i, c := range checks {
		r.checks[i] = &cachedCheck{Check: c}
	}
	mux.Handle("GET /readyz", r)
	return mux
}

type readiness struct {
	checks []*cachedCheck
}

type cachedCheck struct {
	Check
	mu   sync.Mutex
	at   time.Time
	last error
}

// run returns the check's result, run afresh when the last one is older than CheckCacheFor.
// The lock also makes concurrent probes share one run.
func (c *cachedCheck) run(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < CheckCacheFor {
		return c.last
	}
	c.last = c.Run(ctx)
	c.at = time.Now()
	return c.last
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), CheckTimeout)
	defer cancel()
	errs := make([]error, len(r.checks))
	var wg sync.WaitGroup
	for i, c := range r.checks {
		wg.Go(func() { errs[i] = c.run(ctx) })
	}
	wg.Wait()
	var failed strings.Builder
	for i, err := range errs {
		if err != nil {
			// One line per check: a joined error's lines are folded into it.
			fmt.Fprintf(&failed, "%s: %s\n", r.checks[i].Name, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if failed.Len() > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, failed.String())
		return
	}
	fmt.Fprintln(w, "ok")
}
