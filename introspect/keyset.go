package introspect

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

const (
	// refreshMinInterval rate-limits JWKS fetches caused by tokens with an unknown "kid":
	// otherwise every forged token would cost the identity provider a request. Short
	// enough that a key an IdP starts signing with right after publishing it works
	// within seconds; one fetch per issuer per 5 s is no load on any IdP.
	refreshMinInterval = 5 * time.Second
	// keysMaxAge makes keys the provider has withdrawn stop working within about this long.
	keysMaxAge = time.Hour
	backoffMin = time.Second
	backoffMax = 30 * time.Second
)

// keySet finds an issuer's signing keys (discovery document, then JWK Set) when first needed and
// verifies signatures with them. It implements go-oidc's oidc.KeySet.
//
// It replaces oidc.NewProvider and oidc.NewRemoteKeySet: NewProvider cannot use a configured
// discovery URL, neither bounds response sizes, RemoteKeySet refetches the JWK Set for every
// token whose signature does not verify (not only for an unknown kid) without a rate limit, and
// go-oidc flattens fetch errors with %v so they could not be told apart from bad signatures.
type keySet struct {
	issuer       string
	discoveryURL string
	http         *idpClient
	now          func() time.Time
	log          *slog.Logger

	flight singleflight.Group // one fetch at a time

	mu       sync.Mutex
	jwksURL  string // from the discovery document; "" until discovered
	keys     []jose.JSONWebKey
	fetched  time.Time // last successful JWK Set fetch
	next     time.Time // no fetch before this (rate limit after success, backoff after failure)
	failures int       // consecutive failed fetches
	lastErr  error     // last fetch failure, nil after a success
}

// verifyCall carries the parsed token into keySet.VerifySignature through go-oidc's Verify and
// brings back a typed failure, which go-oidc would otherwise flatten into a string.
type verifyCall struct {
	jws *jose.JSONWebSignature
	err *Error
}

type verifyCallKey struct{}

// VerifySignature implements oidc.KeySet. It is only called from issuer.validate.
func (ks *keySet) VerifySignature(ctx context.Context, _ string) ([]byte, error) {
	call, ok := ctx.Value(verifyCallKey{}).(*verifyCall)
	if !ok {
		return nil, errors.New("introspect: key set used outside Validator")
	}
	payload, err := ks.verify(ctx, call.jws)
	if err != nil {
		call.err = err
		return nil, err
	}
	return payload, nil
}

func (ks *keySet) verify(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, *Error) {
	h := jws.Signatures[0].Header
	keys, err := ks.keysFor(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	matched := false
	for i := range keys {
		k := &keys[i]
		if (h.KeyID != "" && k.KeyID != h.KeyID) || (k.Algorithm != "" && k.Algorithm != h.Algorithm) {
			continue
		}
		matched = true
		if payload, err := jws.Verify(k.Key); err == nil {
			return payload, nil
		}
	}
	if !matched {
		return nil, invalid("no signing key matches kid and alg")
	}
	return nil, invalid("signature does not verify")
}

// keysFor returns keys that may hold kid ("" matches any), fetching them when there are none,
// when kid is unknown, or when they are older than keysMaxAge; fetches are spaced by the rate
// limit and the failure backoff. A fetch failure is a temporary error unless the keys already
// held contain kid, which are then used as they are.
func (ks *keySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, *Error) {
	now := ks.now()
	ks.mu.Lock()
	keys, fetched, next, lastErr := ks.keys, ks.fetched, ks.next, ks.lastErr
	ks.mu.Unlock()

	known := hasKey(keys, kid)
	if known && now.Sub(fetched) < keysMaxAge {
		return keys, nil
	}
	if now.Before(next) {
		if !known && lastErr != nil {
			return nil, temporary("identity provider unavailable, retrying later", lastErr)
		}
		return keys, nil
	}
	fresh, err := ks.refresh(ctx)
	if err != nil {
		if known {
			return keys, nil
		}
		return nil, temporary("identity provider unavailable", err)
	}
	return fresh, nil
}

func hasKey(keys []jose.JSONWebKey, kid string) bool {
	for i := range keys {
		if kid == "" || keys[i].KeyID == kid {
			return true
		}
	}
	return false
}

// refresh fetches the keys once for all concurrent callers.
func (ks *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	ch := ks.flight.DoChan("keys", func() (any, error) {
		// Detached from this caller: others wait on the same fetch, which the issuer's
		// timeout bounds.
		keys, err := ks.fetch(context.WithoutCancel(ctx))
		now := ks.now()
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if err != nil {
			ks.failures++
			ks.next = now.Add(backoff(ks.failures))
			ks.lastErr = err
			ks.log.Warn("introspect: fetching signing keys failed", "issuer", ks.issuer,
				"failures", ks.failures, "retry_in", ks.next.Sub(now), "err", err)
			return nil, err
		}
		ks.keys, ks.fetched, ks.next, ks.failures, ks.lastErr = keys, now, now.Add(refreshMinInterval), 0, nil
		return keys, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]jose.JSONWebKey), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func backoff(failures int) time.Duration {
	if failures > 8 {
		return backoffMax
	}
	return min(backoffMin<<(failures-1), backoffMax)
}

// fetch discovers the JWK Set URL once, then loads the JWK Set.
func (ks *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ks.mu.Lock()
	jwksURL := ks.jwksURL
	ks.mu.Unlock()
	if jwksURL == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := ks.http.getJSON(ctx, ks.discoveryURL, IdPDiscovery, &doc); err != nil {
			return nil, err
		}
		// OpenID Connect Discovery 1.0 §4.3, RFC 8414 §3.3.
		if doc.Issuer != ks.issuer {
			return nil, fmt.Errorf("introspect: discovery document names issuer %q, want %q", doc.Issuer, ks.issuer)
		}
		if err := checkURL(doc.JWKSURI); err != nil {
			return nil, fmt.Errorf("introspect: discovery document jwks_uri: %v", err)
		}
		jwksURL = doc.JWKSURI
		ks.mu.Lock()
		ks.jwksURL = jwksURL
		ks.mu.Unlock()
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := ks.http.getJSON(ctx, jwksURL, IdPJWKS, &set); err != nil {
		return nil, err
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		// RFC 7517 §5: ignore keys that are not understood. Only public signature keys count;
		// an "oct" (symmetric) key must never verify anything.
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) != nil || (k.Use != "" && k.Use != "sig") {
			continue
		}
		k = k.Public()
		switch k.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("introspect: %s holds no usable signing keys", jwksURL)
	}
	return keys, nil
}
