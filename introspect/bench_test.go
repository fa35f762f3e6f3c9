package introspect

import (
	"context"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

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
		})
	}
}
