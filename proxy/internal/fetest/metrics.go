package fetest

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/saslgate/saslgate/internal/metrics/metricstest"
)

// WaitValue polls a metric until it reaches want, for at most 5 seconds: sessions end on
// the server's goroutines after the client has seen its last byte.
func WaitValue(t testing.TB, g prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := metricstest.Value(t, g, name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%q = %v, want %v", name, labels, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
