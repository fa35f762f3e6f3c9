package bench

import (
	"context"
	"os"
	"runtime"
	"testing"

	"github.com/saslgate/saslgate/internal/shared"
	"github.com/saslgate/saslgate/proxy"
)

// BenchmarkGatewayLoginShared is BenchmarkGatewayLogin at 64 concurrent clients with the
// failure limiter and the refused-login memory in memory ("memory") and in the Valkey/Redis
// store at SASLGATE_BENCH_REDIS, host:port ("store": three store round trips per login, the
// limiter's counts for the address and for the user the client names, and the refusal
// memory's), in the same run; "roundtrip" is the cost of one
// store call (a counter read) at the same concurrency. Skipped without SASLGATE_BENCH_REDIS.
func BenchmarkGatewayLoginShared(b *testing.B) {
	addr := os.Getenv("SASLGATE_BENCH_REDIS")
	if addr == "" {
		b.Skip("set SASLGATE_BENCH_REDIS=host:port of a Valkey/Redis server to compare")
	}
	st, err := shared.New(shared.Config{Address: addr, KeyPrefix: "saslgate-bench:", Timeout: 0})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if err := st.Ready(context.Background()); err != nil {
		b.Fatal(err)
	}
	const conc = 64
	parallel := func(b *testing.B, g *gateway) {
		b.SetParallelism((conc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c := g.login(b)
				c.cmd(b, "LOGOUT")
				c.c.Close()
			}
		})
	}
	b.Run("memory/clients=64", func(b *testing.B) {
		parallel(b, newRoutedGateway(b, nil, nil, func(l *proxy.Login) {
			l.Limiter = proxy.NewFailureLimiter(proxy.Limits{}, nil)
		}))
	})
	b.Run("store/clients=64", func(b *testing.B) {
		parallel(b, newRoutedGateway(b, nil, nil, func(l *proxy.Login) {
			l.Limiter = &proxy.SharedLimiter{Local: proxy.NewFailureLimiter(proxy.Limits{}, nil), Store: st}
			l.Refusals = st
		}))
	})
	b.Run("roundtrip/clients=64", func(b *testing.B) {
		b.SetParallelism((conc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := st.Count(context.Background(), "fail:192.0.2.1/32"); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("roundtrip/clients=1", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.Count(context.Background(), "fail:192.0.2.1/32"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
