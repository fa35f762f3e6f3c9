package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/internal/metrics/metricstest"
)

// Connections refused by the PROXY protocol checks are counted by reason.
func TestTrackerMetricsProxyRefusals(t *testing.T) {
	m := metrics.New(metrics.Labels{Mechanisms: Mechanisms, Results: Results})
	for _, c := range []struct {
		trusted, send, reason string
	}{
		{"10.0.0.0/8", "", "proxy_untrusted"},
		{"127.0.0.0/8", "GET / HTTP/1.1\r\n\r\n", "proxy_header"},
	} {
		l := ListenerConfig{Name: c.reason, ProxyProtocol: true, ProxyTrustedNetworks: []string{c.trusted}}
		_, addr := serveAccept(t, Accept{Listener: l, Log: slogDiscard(), Observer: m.Listener(c.reason, "imap")}, make(chan [2]string, 1))
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte(c.send))
		if !closedByPeer(t, nc) {
			t.Errorf("%s: connection not closed", c.reason)
		}
		nc.Close()
		// The count follows the close: wait for it.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got := metricstest.Value(t, m.Registry(), metrics.NameConnectionsRefused, "listener", c.reason, "reason", c.reason)
			if got == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s refusals = %v, want 1", c.reason, got)
			}
		}
		if got := metricstest.Value(t, m.Registry(), metrics.NameConnectionsAccepted, "listener", c.reason); got != 0 {
			t.Errorf("%s: accepted = %v, want 0", c.reason, got)
		}
	}
}
