package metrics

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metric names: stable, part of saslgate's interface (dashboards and alerts use them).
const (
	NameConnectionsAccepted  = "saslgate_connections_accepted_total"
	NameConnectionsRefused   = "saslgate_connections_refused_total"
	NameSessionsActive       = "saslgate_sessions_active"
	NameAuth                 = "saslgate_auth_total"
	NameAuthDelays           = "saslgate_auth_delays_total"
	NameTokenValidation      = "saslgate_token_validation_duration_seconds"
	NameIdPRequests          = "saslgate_idp_requests_total"
	NameIdPRequestErrors     = "saslgate_idp_request_errors_total"
	NameBackendLogin         = "saslgate_backend_login_duration_seconds"
	NameBackendLoginFailures = "saslgate_backend_login_failures_total"
	NameRelayedBytes         = "saslgate_relayed_bytes_total"
	NameBackendMemberUp      = "saslgate_backend_member_up"
	NameBackendMemberLogins  = "saslgate_backend_member_logins_total"
	NameRouteLookups         = "saslgate_route_lookups_total"
	NameSharedCalls          = "saslgate_shared_calls_total"
	NameSharedLatency        = "saslgate_shared_latency_seconds"
)

// Label values. Every label has a closed set of values (listener and issuer names come from
// the configuration; mechanisms and authentication results from Labels), so no client can
// grow the series count.
var (
	// RefusalReasons are the reason label values of NameConnectionsRefused.
	RefusalReasons = []string{"max_connections", "max_connections_per_ip", "proxy_untrusted", "proxy_header"}
	// ValidationModes are the mode label values of NameTokenValidation: the issuer mode that
	// decided, or "none" when the token was refused before reaching an issuer.
	ValidationModes = []string{"jwt", "introspection", "userinfo", "none"}
	// BackendFailures are the reason label values of NameBackendLoginFailures.
	BackendFailures = []string{"unavailable", "rejected", "unknown_user", "error"}
	// RouteSources and RouteResults are the label values of NameRouteLookups: the source
	// that answered ("default": none knew the user, "none": the lookup failed) and how.
	RouteSources = []string{"static", "hash", "http", "ldap", "default", "none"}
	RouteResults = []string{"cached", "shared", "looked_up", "error"}
)

// Labels are the label values the emitting packages define: the SASL mechanisms the front
// ends report (anything else counts as "other") and the authentication results (anything else
// counts as the last one).
type Labels struct {
	Mechanisms []string
	Results    []string
}

// Metrics holds saslgate's metrics in a registry of its own. Its methods are safe for
// concurrent use, and do nothing on a nil *Metrics.
type Metrics struct {
	reg *prometheus.Registry

	accepted      *prometheus.CounterVec
	refused       *prometheus.CounterVec
	sessions      *prometheus.GaugeVec
	auth          *prometheus.CounterVec
	delays        *prometheus.CounterVec
	validationVec *prometheus.HistogramVec
	idpRequests   *prometheus.CounterVec
	idpErrors     *prometheus.CounterVec
	backendLogin  *prometheus.HistogramVec
	backendFail   *prometheus.CounterVec
	relayed       *prometheus.CounterVec
	memberUp      *prometheus.GaugeVec
	memberLogins  *prometheus.CounterVec
	routeLookups  *prometheus.CounterVec
	sharedCalls   *prometheus.CounterVec
	sharedLatency *prometheus.HistogramVec

	// validationObs are the latency children, resolved once: [mode][cached].
	validationObs [][2]prometheus.Observer

	mechanisms, results []string // the auth label values, from Labels
}

// New returns Metrics registered, with Go runtime and process collectors, in a new registry.
// labels are the mechanism and result label values of NameAuth.
func New(labels Labels) *Metrics {
	m := &Metrics{
		mechanisms: append(slices.Clone(labels.Mechanisms), "other"),
		results:    slices.Clone(labels.Results),
		reg:        prometheus.NewRegistry(),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameConnectionsAccepted,
			Help: "Connections accepted by a listener (PROXY header read, within the connection limits).",
		}, []string{"listener", "protocol"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameConnectionsRefused,
			Help: "Connections closed by a listener before their session started, by reason: max_connections, max_connections_per_ip, proxy_untrusted (PROXY protocol peer not trusted), proxy_header (bad or missing PROXY header).",
		}, []string{"listener", "protocol", "reason"}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameSessionsActive,
			Help: "Open client sessions by state: preauth (not yet authenticated) or authenticated (relayed to the backend).",
		}, []string{"listener", "protocol", "state"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameAuth,
			Help: "Authentication attempts by mechanism and result: success, invalid_token, insufficient_scope, invalid_request (RFC 7628 statuses), malformed, unavailable (token validation temporarily failed), backend_rejected, backend_unavailable, delayed (failed-authentication delay outlasted the pre-authentication timeout), error.",
		}, []string{"listener", "protocol", "mechanism", "result"}),
		delays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameAuthDelays,
			Help: "Authentication answers held back by the failed-authentication limiter.",
		}, []string{"listener", "protocol"}),
		validationVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameTokenValidation,
			Help:    "Token validation latency by the deciding issuer's mode (jwt, introspection, userinfo, none) and cache result (hit, miss).",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"mode", "cache"}),
		idpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameIdPRequests,
			Help: "HTTP requests to identity providers by issuer and kind (discovery, jwks, introspection, userinfo).",
		}, []string{"issuer", "kind"}),
		idpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameIdPRequestErrors,
			Help: "HTTP requests to identity providers that failed: no answer, or an error status other than a userinfo endpoint refusing the token.",
		}, []string{"issuer", "kind"}),
		backendLogin: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameBackendLogin,
			Help:    "Backend dial and login latency, successful or not, by protocol.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"protocol"}),
		backendFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameBackendLoginFailures,
			Help: "Backend logins that failed, by protocol and reason: unavailable, rejected (the per-user secret), unknown_user (no secret), error.",
		}, []string{"protocol", "reason"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRelayedBytes,
			Help: "Bytes relayed between clients and backends after authentication, by direction: up (client to backend), down (backend to client). IMAP sessions count when they end; SMTP counts message data.",
		}, []string{"listener", "protocol", "direction"}),
		memberUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameBackendMemberUp,
			Help: "Whether a backend pool member passes its health checks (1) or not (0), by protocol, pool and member address.",
		}, []string{"protocol", "pool", "member"}),
		memberLogins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameBackendMemberLogins,
			Help: "Backend logins by protocol, pool, member address (non_member: a server a route named that the pool does not list) and result: success, unavailable, rejected, unknown_user, error.",
		}, []string{"protocol", "pool", "member", "result"}),
		routeLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRouteLookups,
			Help: "Route lookups by the source that answered (static, hash, http, ldap; default: no source knew the user; none: the lookup failed) and result: cached, shared (another replica's answer, from the shared store), looked_up (a source was asked), error.",
		}, []string{"source", "result"}),
		sharedCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameSharedCalls,
			Help: "Calls to the shared Valkey/Redis store by operation (get, set, setnx, incr, count, del, ping) and result: ok, error (failed or timed out; local state was used), skipped (not sent: the store failed moments ago).",
		}, []string{"op", "result"}),
		sharedLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameSharedLatency,
			Help:    "Latency of the calls sent to the shared store, by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"op"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.accepted, m.refused, m.sessions, m.auth, m.delays, m.validationVec,
		m.idpRequests, m.idpErrors, m.backendLogin, m.backendFail, m.relayed,
		m.memberUp, m.memberLogins, m.routeLookups, m.sharedCalls, m.sharedLatency,
	)
	m.validationObs = make([][2]prometheus.Observer, len(ValidationModes))
	for i, mode := range ValidationModes {
		m.validationObs[i][0] = m.validationVec.WithLabelValues(mode, "miss")
		m.validationObs[i][1] = m.validationVec.WithLabelValues(mode, "hit")
	}
	return m
}

// MemberHealth implements backends.PoolObserver.
func (m *Metrics) MemberHealth(protocol, pool, member string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.memberUp.WithLabelValues(protocol, pool, member).Set(v)
}

// MemberLogin implements proxy.MemberObserver: one backend login through a pool's member
// ("" for a server the pool does not list, counted as non_member so that routes cannot grow
// the series count); result is "" on success, else one of BackendFailures.
func (m *Metrics) MemberLogin(protocol, pool, member, result string) {
	if m == nil {
		return
	}
	if member == "" {
		member = "non_member"
	}
	switch {
	case result == "":
		result = "success"
	case !slices.Contains(BackendFailures, result):
		result = BackendFailures[len(BackendFailures)-1]
	}
	m.memberLogins.WithLabelValues(protocol, pool, member, result).Inc()
}

// RouteLookup implements backends.RouteObserver; values outside RouteSources and
// RouteResults count as the last of each.
func (m *Metrics) RouteLookup(source, result string) {
	if m == nil {
		return
	}
	if !slices.Contains(RouteSources, source) {
		source = RouteSources[len(RouteSources)-1]
	}
	if !slices.Contains(RouteResults, result) {
		result = RouteResults[len(RouteResults)-1]
	}
	m.routeLookups.WithLabelValues(source, result).Inc()
}

// Registry is the registry the metrics are in, for scraping and tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// SharedOps and SharedResults are the label values of NameSharedCalls; values outside them
// count as the last of each.
var (
	SharedOps     = []string{"get", "set", "setnx", "incr", "count", "del", "ping", "other"}
	SharedResults = []string{"ok", "skipped", "error"}
)

// ObserveSharedCall implements shared.Observer. Skipped calls were not sent and have no
// latency.
func (m *Metrics) ObserveSharedCall(op, result string, d time.Duration) {
	if m == nil {
		return
	}
	if !slices.Contains(SharedOps, op) {
		op = SharedOps[len(SharedOps)-1]
	}
	if !slices.Contains(SharedResults, result) {
		result = SharedResults[len(SharedResults)-1]
	}
	m.sharedCalls.WithLabelValues(op, result).Inc()
	if result != "skipped" {
		m.sharedLatency.WithLabelValues(op).Observe(d.Seconds())
	}
}

// ObserveValidation implements introspect.Observer.
func (m *Metrics) ObserveValidation(mode string, cached bool, d time.Duration) {
	if m == nil {
		return
	}
	i := len(ValidationModes) - 1 // none
	switch mode {
	case "jwt":
		i = 0
	case "introspection":
		i = 1
	case "userinfo":
		i = 2
	}
	c := 0
	if cached {
		c = 1
	}
	m.validationObs[i][c].Observe(d.Seconds())
}

// ObserveIdPRequest implements introspect.Observer.
func (m *Metrics) ObserveIdPRequest(issuer, kind string, failed bool) {
	if m == nil {
		return
	}
	m.idpRequests.WithLabelValues(issuer, kind).Inc()
	if failed {
		m.idpErrors.WithLabelValues(issuer, kind).Inc()
	}
}

// Listener is the metrics of one listener, their label values resolved once. It implements
// the front ends' observer (proxy.Observer); its methods are safe for concurrent use and do
// nothing on a nil *Listener.
type Listener struct {
	accepted     prometheus.Counter
	refused      []prometheus.Counter // by RefusalReasons
	preauth      prometheus.Gauge
	authed       prometheus.Gauge
	mechanisms   []string
	results      []string
	auth         [][]prometheus.Counter // by mechanisms, then results
	delays       prometheus.Counter
	backendLogin prometheus.Observer
	backendFail  []prometheus.Counter // by BackendFailures
	up, down     prometheus.Counter
}

// Listener returns the metrics of the listener name serving protocol, or nil when m is nil.
func (m *Metrics) Listener(name, protocol string) *Listener {
	if m == nil {
		return nil
	}
	l := &Listener{
		accepted:     m.accepted.WithLabelValues(name, protocol),
		preauth:      m.sessions.WithLabelValues(name, protocol, "preauth"),
		authed:       m.sessions.WithLabelValues(name, protocol, "authenticated"),
		mechanisms:   m.mechanisms,
		results:      m.results,
		delays:       m.delays.WithLabelValues(name, protocol),
		backendLogin: m.backendLogin.WithLabelValues(protocol),
		up:           m.relayed.WithLabelValues(name, protocol, "up"),
		down:         m.relayed.WithLabelValues(name, protocol, "down"),
	}
	for _, r := range RefusalReasons {
		l.refused = append(l.refused, m.refused.WithLabelValues(name, protocol, r))
	}
	for _, mech := range m.mechanisms {
		row := make([]prometheus.Counter, 0, len(m.results))
		for _, r := range m.results {
			row = append(row, m.auth.WithLabelValues(name, protocol, mech, r))
		}
		l.auth = append(l.auth, row)
	}
	for _, r := range BackendFailures {
		l.backendFail = append(l.backendFail, m.backendFail.WithLabelValues(protocol, r))
	}
	return l
}

// Accepted counts a connection admitted to the listener.
func (l *Listener) Accepted() {
	if l != nil {
		l.accepted.Inc()
	}
}

// Refused counts a connection refused for reason, one of RefusalReasons.
func (l *Listener) Refused(reason string) {
	if l == nil {
		return
	}
	if i := slices.Index(RefusalReasons, reason); i >= 0 {
		l.refused[i].Inc()
	}
}

// AuthDelayed counts an authentication answer held back by the failed-authentication limiter.
func (l *Listener) AuthDelayed() {
	if l != nil {
		l.delays.Inc()
	}
}

// Authenticated counts one authentication attempt by mechanism and result.
func (l *Listener) Authenticated(mech, result string) {
	if l == nil || len(l.results) == 0 {
		return
	}
	i := slices.Index(l.mechanisms, mech)
	if i < 0 {
		i = len(l.mechanisms) - 1 // other
	}
	j := slices.Index(l.results, result)
	if j < 0 {
		j = len(l.results) - 1
	}
	l.auth[i][j].Inc()
}

// BackendLogin records a backend dial and login that took d; result is "" when it succeeded,
// else one of BackendFailures.
func (l *Listener) BackendLogin(d time.Duration, result string) {
	if l == nil {
		return
	}
	l.backendLogin.Observe(d.Seconds())
	if result == "" {
		return
	}
	i := slices.Index(BackendFailures, result)
	if i < 0 {
		i = len(BackendFailures) - 1
	}
	l.backendFail[i].Inc()
}

// Relayed counts bytes relayed up (client to backend) and down (backend to client).
func (l *Listener) Relayed(up, down int64) {
	if l == nil {
		return
	}
	if up > 0 {
		l.up.Add(float64(up))
	}
	if down > 0 {
		l.down.Add(float64(down))
	}
}

// SessionStarted counts a new connection as pre-authentication.
func (l *Listener) SessionStarted() {
	if l != nil {
		l.preauth.Inc()
	}
}

// SessionAuthenticated moves one session from pre-authentication to authenticated.
func (l *Listener) SessionAuthenticated() {
	if l != nil {
		l.preauth.Dec()
		l.authed.Inc()
	}
}

// SessionEnded takes a session out of the gauges; authenticated says which one it was in.
func (l *Listener) SessionEnded(authenticated bool) {
	switch {
	case l == nil:
	case authenticated:
		l.authed.Dec()
	default:
		l.preauth.Dec()
	}
}
