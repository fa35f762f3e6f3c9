package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/saslgate/saslgate/internal/metrics/metricstest"
	"github.com/saslgate/saslgate/introspect"
)

// Tests and the demo leave metrics out: every method must do nothing on nil.
func TestNilRecordsNothing(t *testing.T) {
	var m *Metrics
	m.ObserveValidation("jwt", true, time.Second)
	m.ObserveIdPRequest("https://idp", IdPKinds[0], true)
	l := m.Listener("imaps", "imap")
	if l != nil || m.Registry() != nil {
		t.Fatal("nil Metrics made a Listener or a registry")
	}
	l.Accepted()
	l.Refused("max_connections")
	l.Authenticated("XOAUTH2", "success")
	l.AuthDelayed()
	l.BackendLogin(time.Second, "rejected")
	l.Relayed(1, 2)
	l.SessionStarted()
	l.SessionAuthenticated()
	l.SessionEnded(true)
}

// testLabels are the label values the proxy package defines (copied: this package imports none
// of saslgate's domain packages).
var testLabels = Labels{
	Mechanisms: []string{"OAUTHBEARER", "XOAUTH2", "LOGIN"},
	Results: []string{"success", "invalid_token", "insufficient_scope", "invalid_request",
		"malformed", "unavailable", "backend_rejected", "backend_unavailable", "delayed", "error"},
}

// IdPKinds are the kind label values introspect reports.
var IdPKinds = []string{introspect.IdPDiscovery, introspect.IdPJWKS, introspect.IdPIntrospection, introspect.IdPUserinfo}

func TestListener(t *testing.T) {
	m := New(testLabels)
	l := m.Listener("imaps", "imap")
	reg := m.Registry()
	l.Accepted()
	l.Refused("max_connections_per_ip")
	l.Refused("not a reason") // not counted, no new series
	l.Authenticated("OAUTHBEARER", "success")
	l.Authenticated("SCRAM-SHA-1", "invalid_token")    // counted as mechanism "other"
	l.Authenticated("XOAUTH2", "not a result")         // counted as the last result, "error"
	l.BackendLogin(10*time.Millisecond, "")            // success
	l.BackendLogin(10*time.Millisecond, "unavailable") // failure
	l.BackendLogin(10*time.Millisecond, "bogus")       // counted as "error"
	l.Relayed(10, 0)
	l.SessionStarted()
	l.SessionStarted()
	l.SessionAuthenticated()
	l.SessionEnded(false)
	m.ObserveValidation("jwt", false, time.Millisecond)
	m.ObserveValidation("bogus", true, time.Millisecond)
	m.ObserveIdPRequest("https://idp.example", "jwks", false)
	m.ObserveIdPRequest("https://idp.example", "jwks", true)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{NameConnectionsAccepted, []string{"listener", "imaps", "protocol", "imap"}, 1},
		{NameConnectionsRefused, nil, 1},
		{NameConnectionsRefused, []string{"reason", "max_connections_per_ip"}, 1},
		{NameAuth, []string{"mechanism", "OAUTHBEARER", "result", "success"}, 1},
		{NameAuth, []string{"mechanism", "other", "result", "invalid_token"}, 1},
		{NameAuth, []string{"mechanism", "XOAUTH2", "result", "error"}, 1},
		{NameAuth, nil, 3},
		{NameBackendLogin, []string{"protocol", "imap"}, 3},
		{NameBackendLoginFailures, []string{"protocol", "imap", "reason", "unavailable"}, 1},
		{NameBackendLoginFailures, []string{"protocol", "imap", "reason", "error"}, 1},
		{NameBackendLoginFailures, nil, 2},
		{NameRelayedBytes, []string{"direction", "up"}, 10},
		{NameRelayedBytes, []string{"direction", "down"}, 0},
		{NameSessionsActive, []string{"state", "authenticated"}, 1},
		{NameSessionsActive, []string{"state", "preauth"}, 0},
		{NameTokenValidation, []string{"mode", "jwt", "cache", "miss"}, 1},
		{NameTokenValidation, []string{"mode", "none", "cache", "hit"}, 1},
		{NameIdPRequests, []string{"issuer", "https://idp.example", "kind", "jwks"}, 2},
		{NameIdPRequestErrors, []string{"kind", "jwks"}, 1},
	} {
		if got := metricstest.Value(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	l.SessionEnded(true)
	if got := metricstest.Value(t, reg, NameSessionsActive); got != 0 {
		t.Errorf("sessions after End = %v, want 0", got)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestAdminHandler(t *testing.T) {
	m := New(testLabels)
	m.Listener("smtps", "smtp").Accepted()
	var idpDown bool
	ln := httptest.NewServer(http.NotFoundHandler()) // a backend that accepts TCP
	defer ln.Close()
	checks := []Check{
		{Name: "issuers", Run: func(context.Context) error {
			if idpDown {
				return errors.Join(errors.New("issuer a: down"), errors.New("issuer b: down"))
			}
			return nil
		}},
		DialCheck("smtp backend", ln.Listener.Addr().String(), time.Second),
	}
	h := m.Handler(checks, nil)

	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}

	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, name := range []string{NameConnectionsAccepted, NameAuth, NameTokenValidation, "go_goroutines", "process_cpu_seconds_total"} {
		if families[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v := families[NameConnectionsAccepted].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("%s = %v, want 1", NameConnectionsAccepted, v)
	}

	// A fresh handler, so that the cached results are not reused.
	idpDown = true
	ln.Close()
	code, body = get(t, m.Handler(checks, nil), "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", code)
	}
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "issuers: issuer a: down; issuer b: down") || !strings.HasPrefix(lines[1], "smtp backend: ") {
		t.Errorf("/readyz body %q: want one line per failed check", body)
	}
}

func TestAdminConfig(t *testing.T) {
	if err := (AdminConfig{}).Validate(); err != nil || (AdminConfig{}).Enabled() {
		t.Errorf("empty admin section: %v", err)
	}
	if err := (AdminConfig{Address: "127.0.0.1:9100"}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (AdminConfig{Address: "9100"}).Validate(); err == nil || !strings.Contains(err.Error(), "admin.address") {
		t.Errorf("bad address: %v", err)
	}
	// The admin listener has no authentication: only loopback and private addresses, unless
	// the configuration says explicitly that the network is private itself.
	for addr, private := range map[string]bool{
		"127.0.0.1:9100": true, "127.9.9.9:9100": true, "[::1]:9100": true, "localhost:9100": true,
		"10.1.2.3:9100": true, "172.16.0.1:9100": true, "192.168.1.1:9100": true, "[fd00::1]:9100": true,
		"[fe80::1]:9100": true,
		"0.0.0.0:9100":   false, ":9100": false, "[::]:9100": false, "203.0.113.7:9100": false,
		"172.32.0.1:9100": false, "[2001:db8::1]:9100": false, "admin.example.com:9100": false,
	} {
		err := (AdminConfig{Address: addr}).Validate()
		if (err == nil) != private {
			t.Errorf("%s: err = %v, want accepted %v", addr, err, private)
		}
		if err != nil && !strings.Contains(err.Error(), "insecure_public_address") {
			t.Errorf("%s: error %q does not say how to allow it", addr, err)
		}
		if err := (AdminConfig{Address: addr, InsecurePublicAddress: true}).Validate(); err != nil {
			t.Errorf("%s with insecure_public_address: %v", addr, err)
		}
	}
}

// The example dashboard must query only metrics saslgate serves.
func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	b, err := os.ReadFile("../../examples/grafana/saslgate-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}

	// Every series New can produce: all label children made, histograms expanded.
	m := New(testLabels)
	l := m.Listener("l", "imap")
	l.Accepted()
	l.Relayed(1, 1)
	for _, kind := range IdPKinds {
		m.ObserveIdPRequest("i", kind, true)
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range families {
		known[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[f.GetName()+s] = true
			}
		}
	}

	metricName := regexp.MustCompile(`\b(saslgate|go|process)_[a-zA-Z0-9_]+`)
	used := map[string]bool{}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q has a target without expr", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			exprs = append(exprs, fmt.Sprint(q["query"]))
		}
	}
	for _, e := range exprs {
		names := metricName.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("expr %q names no metric", e)
		}
		for _, n := range names {
			used[n] = true
			if !known[n] {
				t.Errorf("expr %q: %s is not a metric saslgate registers", e, n)
			}
		}
	}
	for _, n := range []string{NameConnectionsAccepted, NameConnectionsRefused, NameSessionsActive, NameAuth, NameAuthDelays,
		NameTokenValidation + "_bucket", NameIdPRequests, NameIdPRequestErrors, NameBackendLogin + "_bucket", NameBackendLoginFailures, NameRelayedBytes} {
		if !used[n] {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}

// Member health is a gauge per protocol, pool and member; backend logins count per member
// (a server the pool does not list as non_member); route lookups count by source and
// result, anything unknown in the last value of each, so no answer grows the series.
func TestPoolAndRouteMetrics(t *testing.T) {
	m := New(testLabels)
	m.MemberHealth("imap", "shard", "10.0.0.1:143", true)
	m.MemberHealth("imap", "shard", "10.0.0.2:143", true)
	m.MemberHealth("imap", "shard", "10.0.0.2:143", false)
	m.RouteLookup("static", "looked_up")
	m.RouteLookup("static", "cached")
	m.RouteLookup("static", "cached")
	m.RouteLookup("evil\r\nsource", "weird")
	m.MemberLogin("imap", "shard", "10.0.0.1:143", "")
	m.MemberLogin("imap", "shard", "10.0.0.1:143", "")
	m.MemberLogin("imap", "shard", "10.0.0.2:143", "rejected")
	m.MemberLogin("imap", "shard", "", "unavailable")
	m.MemberLogin("imap", "shard", "10.0.0.2:143", "weird")
	got := map[string]float64{}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, lp := range mt.GetLabel() {
				key += " " + lp.GetName() + "=" + lp.GetValue()
			}
			if g := mt.GetGauge(); g != nil {
				got[key] = g.GetValue()
			}
			if c := mt.GetCounter(); c != nil {
				got[key] = c.GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		NameBackendMemberUp + " member=10.0.0.1:143 pool=shard protocol=imap":                      1,
		NameBackendMemberUp + " member=10.0.0.2:143 pool=shard protocol=imap":                      0,
		NameRouteLookups + " result=looked_up source=static":                                       1,
		NameRouteLookups + " result=cached source=static":                                          2,
		NameRouteLookups + " result=error source=none":                                             1,
		NameBackendMemberLogins + " member=10.0.0.1:143 pool=shard protocol=imap result=success":   2,
		NameBackendMemberLogins + " member=10.0.0.2:143 pool=shard protocol=imap result=rejected":  1,
		NameBackendMemberLogins + " member=non_member pool=shard protocol=imap result=unavailable": 1,
		NameBackendMemberLogins + " member=10.0.0.2:143 pool=shard protocol=imap result=error":     1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
