package smtp

import (
	"bufio"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/internal/metrics/metricstest"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
)

// A failed and a successful AUTH, a connection over the per-address limit and one message
// relayed, as the listener's metrics count them.
func TestMetrics(t *testing.T) {
	m := metrics.New(metrics.Labels{Mechanisms: proxy.Mechanisms, Results: proxy.Results})
	e := newEnv(t, nil, func(s *Server) {
		s.Observer = m.Listener(s.Listener.Name, "smtp")
		s.Limits = proxy.Limits{MaxConnectionsPerIP: 2}
	})
	reg := m.Registry()
	lbl := func(kv ...string) []string { return append([]string{"listener", proxy.TLSImplicit}, kv...) }

	failed := e.dial(t, true)
	failed.Send("EHLO client.example")
	failed.Expect("250 ")
	failed.Send("AUTH OAUTHBEARER " + oauthbearer("", e.token(t, demoissuer.Claims{TTL: -time.Hour})))
	if st := errorStatus(t, failed.Expect("334 ")[0]); st != "invalid_token" {
		t.Fatalf("error status %q, want invalid_token", st)
	}
	failed.Send("AQ==")
	failed.Expect("535 5.7.8 ")

	c := e.login(t) // XOAUTH2
	msg := "Subject: metrics\r\n\r\nhello\r\n"
	c.Send("MAIL FROM:<alice@example.com>")
	c.Expect("250 ")
	c.Send("RCPT TO:<bob@example.com>")
	c.Expect("250 ")
	c.Send("DATA")
	c.Expect("354 ")
	c.Send(msg + ".")
	c.Expect("250 ")
	e.nextMessage(t)

	nc, err := tls.Dial("tcp", e.ImplAddr, e.Cert.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(nc).ReadString('\n'); !strings.HasPrefix(line, "421 ") {
		t.Fatalf("over the limit: got %q, want 421", line)
	}
	nc.Close()

	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{metrics.NameAuth, lbl("mechanism", "XOAUTH2", "result", "success"), 1},
		{metrics.NameAuth, lbl("mechanism", "OAUTHBEARER", "result", "invalid_token"), 1},
		{metrics.NameAuth, lbl(), 2},
		{metrics.NameConnectionsAccepted, lbl("protocol", "smtp"), 2},
		{metrics.NameConnectionsRefused, lbl("reason", "max_connections_per_ip"), 1},
		{metrics.NameSessionsActive, lbl("state", "preauth"), 1},
		{metrics.NameSessionsActive, lbl("state", "authenticated"), 1},
		{metrics.NameBackendLogin, []string{"protocol", "smtp"}, 1},
		{metrics.NameBackendLoginFailures, nil, 0},
		{metrics.NameAuthDelays, nil, 0},
	} {
		if got := metricstest.Value(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%q = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// The message as DATA carried it: dot-stuffing and the final dot removed, CRLFs kept.
	if got := metricstest.Value(t, reg, metrics.NameRelayedBytes, lbl("direction", "up")...); got != float64(len(msg)) {
		t.Errorf("bytes relayed up = %v, want %d", got, len(msg))
	}

	c.Send("QUIT")
	c.Expect("221 ")
	failed.Send("QUIT")
	failed.Expect("221 ")
	fetest.WaitValue(t, reg, 0, metrics.NameSessionsActive)
}

// Every authentication answer a failing client gets is held back, and counted.
func TestMetricsAuthDelay(t *testing.T) {
	m := metrics.New(metrics.Labels{Mechanisms: proxy.Mechanisms, Results: proxy.Results})
	fl := proxy.NewFailureLimiter(proxy.Limits{AuthFailures: 1, AuthDelay: 1, MaxAuthDelay: 1}, nil)
	e := newEnv(t, nil, func(s *Server) { s.Observer = m.Listener(s.Listener.Name, "smtp"); s.Login.Limiter = fl })
	c := e.dial(t, true)
	c.Send("EHLO client.example")
	c.Expect("250 ")
	for range 2 {
		c.Send("AUTH XOAUTH2 " + xoauth2("alice", "not-a-token"))
		c.Expect("334 ")
		c.Send("")
		c.Expect("535 ")
	}
	if got := metricstest.Value(t, m.Registry(), metrics.NameAuthDelays, "listener", proxy.TLSImplicit); got != 1 {
		t.Errorf("auth delays = %v, want 1", got)
	}
	if got := metricstest.Value(t, m.Registry(), metrics.NameAuth, "mechanism", "XOAUTH2", "result", "invalid_token"); got != 2 {
		t.Errorf("XOAUTH2 invalid_token = %v, want 2", got)
	}
}
