package introspect

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a test Observer.
type recorder struct {
	mu          sync.Mutex
	validations []string // "mode cached"
	requests    []string // "kind failed"
}

func (r *recorder) ObserveValidation(mode string, cached bool, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.validations = append(r.validations, fmt.Sprint(mode, " ", cached))
}

func (r *recorder) ObserveIdPRequest(issuer, kind string, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, fmt.Sprint(kind, " ", failed))
}

func (r *recorder) take() (validations, requests string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	validations, requests = strings.Join(r.validations, ", "), strings.Join(r.requests, ", ")
	r.validations, r.requests = nil, nil
	return validations, requests
}

func TestReadyAndObserver(t *testing.T) {
	idp := newTestIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Cache.Disabled = false
	rec := &recorder{}
	v, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()), WithObserver(rec))

	idp.down.Store(true)
	err := v.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "issuer "+idp.URL()) {
		t.Fatalf("Ready with the IdP down = %v, want an error naming the issuer", err)
	}
	if _, req := rec.take(); req != "discovery true" {
		t.Errorf("requests = %q, want a failed discovery", req)
	}
	idp.down.Store(false)
	clk.Add(backoffMin)
	if err := v.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if _, req := rec.take(); req != "discovery false, jwks false" {
		t.Errorf("requests = %q, want discovery and jwks", req)
	}
	// Loaded: no further request.
	if err := v.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	good := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	expired := idp.claims(clk.Now())
	expired["exp"] = clk.Now().Add(-time.Hour).Unix()
	for _, tok := range []string{good, good, idp.sign(t, tokenSpec{}, expired), "opaque"} {
		v.Validate(context.Background(), Request{Token: tok, Protocol: "imap"})
	}
	val, req := rec.take()
	if want := "jwt false, jwt true, jwt false, none false"; val != want {
		t.Errorf("validations = %q, want %q", val, want)
	}
	if req != "" {
		t.Errorf("requests = %q, want none (keys loaded by Ready)", req)
	}
}
