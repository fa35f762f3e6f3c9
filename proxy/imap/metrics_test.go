package imap

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

// A failed and a successful login, a connection over the per-address limit and a relayed
// session, as the listener's metrics count them.
func TestMetrics(t *testing.T) {
	m := metrics.New(metrics.Labels{Mechanisms: proxy.Mechanisms, Results: proxy.Results})
	e := newEnv(t, func(s *Server) {
		s.Observer = m.Listener(s.Listener.Name, "imap")
		s.Limits = proxy.Limits{MaxConnectionsPerIP: 2}
	})
	reg := m.Registry()
	lbl := func(kv ...string) []string { return append([]string{"listener", proxy.TLSImplicit}, kv...) }

	failed := e.dial(t, true)
	failed.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", e.Issuer.Token(t, demoissuer.Claims{TTL: -time.Hour})))
	failed.Expect("+ ")
	failed.Send("AQ==")
	failed.Expect("a NO [AUTHENTICATIONFAILED]")

	ok := e.dial(t, true)
	ok.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("alice", e.Issuer.Token(t, demoissuer.Claims{})))
	ok.Expect("a OK ")
	// Bytes relayed after the login: what the client sends and reads from here on.
	up, down := 0, 0
	send := func(line string) { ok.Send(line); up += len(line) + 2 }
	expect := func(prefix string) string { line := ok.Expect(prefix); down += len(line) + 2; return line }
	send("b SELECT INBOX")
	for !strings.HasPrefix(expect(""), "b OK") {
	}

	// Both places taken: the third connection from 127.0.0.1 is refused inside TLS.
	nc, err := tls.Dial("tcp", e.ImplAddr, e.Cert.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(nc).ReadString('\n'); !strings.HasPrefix(line, "* BYE ") {
		t.Fatalf("over the limit: got %q, want * BYE", line)
	}
	nc.Close()

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{metrics.NameAuth, lbl("mechanism", "OAUTHBEARER", "result", "success"), 1},
		{metrics.NameAuth, lbl("mechanism", "OAUTHBEARER", "result", "invalid_token"), 1},
		{metrics.NameAuth, lbl(), 2},
		{metrics.NameConnectionsAccepted, lbl("protocol", "imap"), 2},
		{metrics.NameConnectionsRefused, lbl("reason", "max_connections_per_ip"), 1},
		{metrics.NameConnectionsRefused, lbl(), 1},
		{metrics.NameSessionsActive, lbl("state", "preauth"), 1},
		{metrics.NameSessionsActive, lbl("state", "authenticated"), 1},
		{metrics.NameBackendLogin, []string{"protocol", "imap"}, 1},
		{metrics.NameBackendLoginFailures, nil, 0},
		{metrics.NameAuth, []string{"listener", proxy.TLSStartTLS}, 0},
	} {
		if got := metricstest.Value(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	send("c LOGOUT")
	expect("* BYE")
	expect("c OK")
	ok.NC.Close() // rather than wait out halfCloseGrace
	failed.Send("z LOGOUT")
	failed.Expect("* BYE")
	fetest.WaitValue(t, m.Registry(), 0, metrics.NameSessionsActive, lbl()...)
	for dir, want := range map[string]int{"up": up, "down": down} {
		if got := metricstest.Value(t, reg, metrics.NameRelayedBytes, lbl("direction", dir)...); got != float64(want) {
			t.Errorf("%s bytes relayed = %v, want %d", dir, got, want)
		}
	}
}

// A client that leaves after the error challenge, without answering it, has still failed to
// authenticate: the attempt is counted, with its RFC 7628 status.
func TestMetricsClientLeavesAfterErrorChallenge(t *testing.T) {
	m := metrics.New(metrics.Labels{Mechanisms: proxy.Mechanisms, Results: proxy.Results})
	e := newEnv(t, func(s *Server) { s.Observer = m.Listener(s.Listener.Name, "imap") })
	c := e.dial(t, true)
	c.Send("a AUTHENTICATE OAUTHBEARER " + oauthbearer("", e.Issuer.Token(t, demoissuer.Claims{TTL: -time.Hour})))
	c.Expect("+ ")
	c.NC.Close()
	fetest.WaitValue(t, m.Registry(), 1, metrics.NameAuth, "listener", proxy.TLSImplicit, "mechanism", "OAUTHBEARER", "result", "invalid_token")
}
