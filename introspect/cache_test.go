package introspect

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// memShared is an in-memory SharedCache, as a store is between replicas; down fails every
// call.
type memShared struct {
	mu   sync.Mutex
	m    map[string][]byte
	down bool
	gets int
}

func newMemShared() *memShared { return &memShared{m: map[string][]byte{}} }

func (s *memShared) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	if s.down {
		return nil, errors.New("down")
	}
	return s.m[key], nil
}

func (s *memShared) Set(_ context.Context, key string, v []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("down")
	}
	s.m[key] = bytes.Clone(v)
	return nil
}

// Two validators sharing one store: an introspection result of A, positive or negative, is
// B's without asking the IdP; the entry holds neither token nor user in the clear and round
// trips to the same Identity; moved, altered or expired entries are not used; a store that
// fails is no failure.
func TestSharedCache(t *testing.T) {
	idp := newOpaqueIdP(t)
	clk := newClock()
	ic := idp.introspectionIssuer(t)
	store := newMemShared()
	cfg := Config{Issuers: []IssuerConfig{ic}}
	a, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()), WithSharedCache(store))
	b, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()), WithSharedCache(store))
	resp := idp.active(clk.Now())
	resp["exp"] = clk.Now().Add(2 * time.Minute).Unix()
	token := idp.issue(resp)
	r := Request{Token: token, Protocol: "imap"}
	idA, err := a.Validate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := b.Validate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(idA, idB) {
		t.Errorf("B's identity from the store\n%+v\nwant A's\n%+v", idB, idA)
	}
	if n := idp.introspections.Load(); n != 1 {
		t.Errorf("introspections = %d, want 1 for two validators", n)
	}
	for k, v := range store.m {
		if strings.Contains(k, token) || bytes.Contains(v, []byte(token)) || bytes.Contains(v, []byte(idA.User)) {
			t.Errorf("store entry %q holds the token or the user in the clear", k)
		}
	}

	// Negative results are shared too.
	inactive := idp.issue(nil)
	checkErr(t, func() error {
		_, err := a.Validate(context.Background(), Request{Token: inactive, Protocol: "imap"})
		return err
	}(), ErrInvalidToken, "not active")
	e := checkErr(t, func() error {
		_, err := b.Validate(context.Background(), Request{Token: inactive, Protocol: "imap"})
		return err
	}(), ErrInvalidToken, "not active")
	if e.mode != modeIntrospection {
		t.Errorf("shared negative result's mode = %q", e.mode)
	}
	if n := idp.introspections.Load(); n != 2 {
		t.Errorf("introspections = %d, want 2", n)
	}

	// An entry moved to another token's key, or altered, is not trusted.
	other := idp.issue(nil) // inactive at the IdP
	for name, mangle := range map[string]func([]byte) []byte{
		"moved":     func(v []byte) []byte { return v },
		"flipped":   func(v []byte) []byte { v = bytes.Clone(v); v[len(v)-1] ^= 1; return v },
		"version":   func(v []byte) []byte { v = bytes.Clone(v); v[0] = 2; return v },
		"truncated": func(v []byte) []byte { return v[:10] },
		"oversized": func([]byte) []byte { return make([]byte, maxSharedEntry+1) },
	} {
		store.m[sharedKey(cacheKey{sum: sha(other), protocol: "imap"})] = mangle(store.m[sharedKey(cacheKey{sum: sha(token), protocol: "imap"})])
		c, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()), WithSharedCache(store))
		if _, err := c.Validate(context.Background(), Request{Token: other, Protocol: "imap"}); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s entry: %v, want the IdP's verdict (invalid)", name, err)
		}
	}

	// Expiry: past the token's exp, the shared entry is not used.
	clk.Add(2 * time.Minute)
	c, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()), WithSharedCache(store))
	before := idp.introspections.Load()
	c.Validate(context.Background(), r)
	if idp.introspections.Load() != before+1 {
		t.Error("an expired shared entry was used")
	}

	// Store down: validation goes on.
	store.down = true
	if _, err := c.Validate(context.Background(), Request{Token: idp.issue(idp.active(clk.Now())), Protocol: "imap"}); err != nil {
		t.Errorf("store down: %v", err)
	}
}

func sha(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// JWT results stay local: with a shared store configured and an introspection issuer beside
// the JWT one, validating a JWT, good or bad, cached or not, makes no store call (the
// signature check is cheaper than the round trip); an opaque token's result is shared.
func TestSharedCacheSkipsJWT(t *testing.T) {
	idp := newTestIdP(t)
	opaque := newOpaqueIdP(t)
	clk := newClock()
	cfg := baseConfig(idp)
	cfg.Issuers = append(cfg.Issuers, opaque.introspectionIssuer(t))
	cfg.Cache.Disabled = false
	store := newMemShared()
	v, _ := newValidator(t, clk, cfg, WithHTTPClient(idp.srv.Client()), WithSharedCache(store))
	good := idp.sign(t, tokenSpec{}, idp.claims(clk.Now()))
	for range 2 {
		if _, err := v.Validate(context.Background(), Request{Token: good, Protocol: "imap"}); err != nil {
			t.Fatal(err)
		}
	}
	expired := idp.claims(clk.Now().Add(-2 * time.Hour))
	if _, err := v.Validate(context.Background(), Request{Token: idp.sign(t, tokenSpec{}, expired), Protocol: "imap"}); err == nil {
		t.Fatal("an expired JWT was accepted")
	}
	if store.gets != 0 || len(store.m) != 0 {
		t.Errorf("JWT validations made %d store reads and left %d entries, want none", store.gets, len(store.m))
	}
	v.Validate(context.Background(), Request{Token: opaque.issue(opaque.active(clk.Now())), Protocol: "imap"})
	if store.gets != 1 || len(store.m) != 1 {
		t.Errorf("an opaque token's validation made %d store reads and left %d entries, want 1 and 1", store.gets, len(store.m))
	}
}
