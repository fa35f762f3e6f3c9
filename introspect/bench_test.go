package introspect

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
}

// BenchmarkValidateCached is the cost of a login whose token was validated before.
func BenchmarkValidateCached(b *testing.B) {
	idp := newTestIdP(b)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache.Disabled = false
	v, _ := newValidator(b, clk, cfg, WithHTTPClient(idp.srv.Client()))
	req := Request{Token: idp.sign(b, tokenSpec{}, idp.claims(clk.Now())), Protocol: "imap"}
	ctx := context.Background()
	if _, err := v.Validate(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkValidateJWT is the cost of a full validation (signature, claims, username) with the
// keys already fetched.
func BenchmarkValidateJWT(b *testing.B) {
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256} {
		b.Run(string(alg), func(b *testing.B) {
			idp := newTestIdP(b)
			clk := newClock()
			v, _ := newValidator(b, clk, baseConfig(idp), WithHTTPClient(idp.srv.Client()))
			req := Request{Token: idp.sign(b, tokenSpec{alg: alg}, idp.claims(clk.Now())), Protocol: "imap"}
			ctx := context.Background()
			if _, err := v.Validate(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Validate(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b)
		})
	}
}

// introspectionBench returns an uncached Validator for an introspection issuer on loopback and
// n active tokens.
func introspectionBench(b *testing.B, n int) (*Validator, []Request) {
	idp := newOpaqueIdP(b)
	clk := newClock()
	client := idp.srv.Client()
	t := client.Transport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = DefaultMaxConcurrentRequests
	client.Transport = t
	cfg := Config{Issuers: []IssuerConfig{idp.introspectionIssuer(b)}, Cache: CacheConfig{Disabled: true}}
	v, _ := newValidator(b, clk, cfg, WithHTTPClient(client))
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"}
		if _, err := v.Validate(context.Background(), reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	return v, reqs
}

// BenchmarkValidateIntrospection is one RFC 7662 round trip to a local httptest server per
// validation (cache disabled): client authentication, form POST, JSON response, policy.
func BenchmarkValidateIntrospection(b *testing.B) {
	v, reqs := introspectionBench(b, 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, reqs[0]); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkValidateIntrospectionParallel is the same with distinct tokens from GOMAXPROCS
// goroutines, through max_concurrent_requests (16) slots.
func BenchmarkValidateIntrospectionParallel(b *testing.B) {
	v, reqs := introspectionBench(b, 256)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := v.Validate(ctx, reqs[next.Add(1)%int64(len(reqs))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b)
}
