package frontend

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/tls/certs"
)

// Close returns only after the backend probes have stopped: a probe in progress is
// cancelled (its ctx ends) and none starts after. Before, a probe could still be dialling,
// and log, after its server was closed.
func TestCloseStopsProbes(t *testing.T) {
	for _, stop := range []string{"Close", "Shutdown"} {
		t.Run(stop, func(t *testing.T) {
			cert, _, err := certs.SelfSigned("127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var calls, running atomic.Int32
			blocked := make(chan struct{})
			probe := func(ctx context.Context) time.Duration {
				running.Add(1)
				defer running.Add(-1)
				if calls.Add(1) == 1 {
					return time.Millisecond // the first, before accepting; the next soon after
				}
				if calls.Load() == 2 {
					close(blocked)
				}
				<-ctx.Done()                      // a backend that does not answer,
				time.Sleep(10 * time.Millisecond) // and a dial that takes a moment to give up
				return time.Millisecond
			}
			var s Server
			served := make(chan error, 1)
			go func() {
				served <- s.Serve(ln, Listen{
					Protocol:  "test",
					Listener:  proxy.ListenerConfig{Name: "test", Protocol: "imap", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
					TLSConfig: certs.FromCertificate(cert).TLSConfig(),
					Probe:     probe,
				}, func(nc net.Conn, _ string, _ proxy.Observer) proxy.Session { nc.Close(); return nil })
			}()
			select {
			case <-blocked:
			case <-time.After(5 * time.Second):
				t.Fatal("the second probe did not start")
			}
			if stop == "Close" {
				s.Close()
			} else {
				s.Shutdown(context.Background())
			}
			if n := running.Load(); n != 0 {
				t.Errorf("%d probes still running after %s returned", n, stop)
			}
			n := calls.Load()
			time.Sleep(20 * time.Millisecond)
			if calls.Load() != n {
				t.Errorf("a probe started after %s returned", stop)
			}
			if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("Serve = %v, want ErrServerClosed", err)
			}
		})
	}
}
