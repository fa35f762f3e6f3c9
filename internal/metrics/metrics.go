package metrics

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
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
)

// Label values. Every label has a closed set of values (listener and issuer names come from
// the configuration), so no client can grow the series count.
var (
	// RefusalReasons are the reason label values of NameConnectionsRefused.
	RefusalReasons = []string{"max_connections", "max_connections_per_ip", "proxy_untrusted", "proxy_header"}
	// Mechanisms are the mechanism label values of NameAuth; anything else counts as "other".
	Mechanisms = []string{sasl.OAuthBearer, sasl.XOAuth2, "LOGIN", "other"}
	// AuthResults are the result label values of NameAuth (see AuthResult).
	AuthResults = []string{
		"success",
		sasl.StatusInvalidToken, sasl.StatusInsufficientScope, sasl.StatusInvalidRequest,
		"malformed", "unavailable", "backend_rejected", "backend_unavailable", "delayed", "error",
	}
	// ValidationModes are the mode label values of NameTokenValidation: the issuer mode that
	// decided, or "none" when the token was refused before reaching an issuer.
	ValidationModes = []string{"jwt", "introspection", "userinfo", "none"}
	// BackendFailures are the reason label values of NameBackendLoginFailures.
	BackendFailures = []string{"unavailable", "rejected", "unknown_user", "error"}
)

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

	// validationObs are the latency children, resolved once: [mode][cached].
	validationObs [][2]prometheus.Observer
}

var _ introspect.Observer = (*Metrics)(nil)

// New returns Metrics registered, with Go runtime and process collectors, in a new registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
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
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.accepted, m.refused, m.sessions, m.auth, m.delays, m.validationVec,
		m.idpRequests, m.idpErrors, m.backendLogin, m.backendFail, m.relayed,
	)
	m.validationObs = make([][2]prometheus.Observer, len(ValidationModes))
	for i, mode := range ValidationModes {
		m.validationObs[i][0] = m.validationVec.WithLabelValues(mode, "miss")
		m.validationObs[i][1] = m.validationVec.WithLabelValues(mode, "hit")
	}
	return m
}

// Registry is the registry the metrics are in, for scraping and tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
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

// Listener is the metrics of one listener, their label values resolved once. Its methods are
// safe for concurrent use and do nothing on a nil *Listener.
type Listener struct {
	accepted     prometheus.Counter
	refused      []prometheus.Counter // by RefusalReasons
	preauth      prometheus.Gauge
	authed       prometheus.Gauge
	auth         [][]prometheus.Counter // by Mechanisms, then AuthResults
	delays       prometheus.Counter
	backendLogin prometheus.Observer
	backendFail  []prometheus.Counter // by BackendFailures
	up, down     prometheus.Counter
}

// Listener returns the metrics of the listener name serving protocol ("imap" or "smtp"), or
// nil when m is nil.
func (m *Metrics) Listener(name, protocol string) *Listener {
	if m == nil {
		return nil
	}
	l := &Listener{
		accepted:     m.accepted.WithLabelValues(name, protocol),
		preauth:      m.sessions.WithLabelValues(name, protocol, "preauth"),
		authed:       m.sessions.WithLabelValues(name, protocol, "authenticated"),
		delays:       m.delays.WithLabelValues(name, protocol),
		backendLogin: m.backendLogin.WithLabelValues(protocol),
		up:           m.relayed.WithLabelValues(name, protocol, "up"),
		down:         m.relayed.WithLabelValues(name, protocol, "down"),
	}
	for _, r := range RefusalReasons {
		l.refused = append(l.refused, m.refused.WithLabelValues(name, protocol, r))
	}
	for _, mech := range Mechanisms {
		row := make([]prometheus.Counter, 0, len(AuthResults))
		for _, r := range AuthResults {
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
	for i, r := range RefusalReasons {
		if r == reason {
			l.refused[i].Inc()
			return
		}
	}
}

// AuthDelayed counts an authentication answer held back by the failed-authentication limiter.
func (l *Listener) AuthDelayed() {
	if l != nil {
		l.delays.Inc()
	}
}

// AuthSucceeded counts a successful authentication with mech.
func (l *Listener) AuthSucceeded(mech string) { l.auth1(mech, 0) }

// AuthFailed counts a failed authentication with mech; err is what failed it (AuthResult).
func (l *Listener) AuthFailed(mech string, err error) {
	if l == nil {
		return
	}
	r := AuthResult(err)
	for j, name := range AuthResults {
		if name == r {
			l.auth1(mech, j)
			return
		}
	}
}

func (l *Listener) auth1(mech string, result int) {
	if l == nil {
		return
	}
	i := len(Mechanisms) - 1
	switch mech {
	case sasl.OAuthBearer:
		i = 0
	case sasl.XOAuth2:
		i = 1
	case "LOGIN":
		i = 2
	}
	l.auth[i][result].Inc()
}

// BackendLogin records a backend dial and login that took d and failed with err (nil: it
// succeeded).
func (l *Listener) BackendLogin(d time.Duration, err error) {
	if l == nil {
		return
	}
	l.backendLogin.Observe(d.Seconds())
	if err == nil {
		return
	}
	i := 3 // error
	switch {
	case errors.Is(err, backends.ErrUnavailable):
		i = 0
	case errors.Is(err, backends.ErrRejected):
		i = 1
	case errors.Is(err, backends.ErrUnknownUser):
		i = 2
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

// ErrDelayed is what AuthFailed is given when the failed-authentication delay would outlast
// the pre-authentication timeout, so the attempt was refused unanswered.
var ErrDelayed = errors.New("metrics: authentication delay outlasts the pre-authentication timeout")

// AuthResult is the result label of a failed authentication: the RFC 7628 status of a
// *sasl.Failure, or what kind of trouble err is. It is the one place where the errors of
// proxy, introspect and backends meet the metric.
func AuthResult(err error) string {
	var f *sasl.Failure
	switch {
	case err == nil:
		return "success"
	case errors.As(err, &f):
		switch f.Status {
		case sasl.StatusInsufficientScope, sasl.StatusInvalidRequest:
			return f.Status
		}
		return sasl.StatusInvalidToken
	case errors.Is(err, ErrDelayed):
		return "delayed"
	case errors.Is(err, sasl.ErrMalformed):
		return "malformed"
	case errors.Is(err, introspect.ErrTemporary):
		return "unavailable"
	case errors.Is(err, backends.ErrRejected), errors.Is(err, backends.ErrUnknownUser):
		return "backend_rejected"
	case errors.Is(err, backends.ErrUnavailable):
		return "backend_unavailable"
	}
	return "error"
}

// Session is one connection in the active-sessions gauges: pre-authentication until
// Authenticated, gone at End.
type Session struct {
	l     *Listener
	state atomic.Int32
}

const (
	statePreauth int32 = iota + 1
	stateAuthed
	stateEnded
)

// StartSession counts a new connection as pre-authentication; it returns nil when l is nil.
func (l *Listener) StartSession() *Session {
	if l == nil {
		return nil
	}
	l.preauth.Inc()
	s := &Session{l: l}
	s.state.Store(statePreauth)
	return s
}

// Authenticated moves the session to the authenticated state.
func (s *Session) Authenticated() {
	if s != nil && s.state.CompareAndSwap(statePreauth, stateAuthed) {
		s.l.preauth.Dec()
		s.l.authed.Inc()
	}
}

// End takes the session out of the gauges; later calls do nothing.
func (s *Session) End() {
	if s == nil {
		return
	}
	switch s.state.Swap(stateEnded) {
	case statePreauth:
		s.l.preauth.Dec()
	case stateAuthed:
		s.l.authed.Dec()
	}
}
