package e2e

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// keyRefetchInterval is introspect's refreshMinInterval: after fetching an issuer's
// JWK Set, saslgate fetches it again for a token with an unknown kid only after this
// long, so forged kids cannot make it hammer the IdP.
const keyRefetchInterval = 5 * time.Second

// TestIdPKeyRotation: while saslgate runs, the IdP puts a new signing key first in its
// JWK Set (keeping the old one published) and signs with it from then on. Tokens
// signed with the old key keep working, and one signed with the new key logs in
// without restarting saslgate: its unknown kid makes saslgate fetch the JWK Set again.
//
// oidc-provider reads its keys when it starts, so the rotation restarts the IdP on its
// port with the new key added (testIdP.restart). The refetch is rate-limited, so the
// new-key token is presented keyRefetchInterval after saslgate's first fetch; the test
// turns parallel for that wait, which then overlaps the sequential tests after it (this
// file sorts before the other tests of issue #4 for that reason).
func TestIdPKeyRotation(t *testing.T) {
	e := e2e(t)
	r := e.startTestIdP(t, "idp-rotation")
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-rotation",
		issuers: []string{jwtIssuer(e.idp.issuer), jwtIssuer(r.issuer)},
	})
	oldTok, oldTok2 := e.mint(t, &r.idp, mintRequest{}), e.mint(t, &r.idp, mintRequest{})
	oldKid := kidOf(t, oldTok)
	e.loginOK(t, g, oldTok) // saslgate fetches r's JWK Set here
	fetched := time.Now()

	r.restart(true)
	newTok := e.mint(t, &r.idp, mintRequest{})
	newKid := kidOf(t, newTok)
	raw, err := r.jwks()
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	if newKid == oldKid || !slices.Equal(kids, []string{newKid, oldKid}) {
		t.Fatalf("after the rotation: JWKS kids %q, new token's kid %q, old %q; want [new old] and a new kid", kids, newKid, oldKid)
	}
	t.Run("old key, cached token", func(t *testing.T) { e.loginOK(t, g, oldTok) })
	t.Run("old key, new token", func(t *testing.T) { e.loginOK(t, g, oldTok2) })

	t.Parallel()
	time.Sleep(time.Until(fetched.Add(keyRefetchInterval + time.Second)))
	t.Run("new key", func(t *testing.T) { e.loginOK(t, g, newTok) })
	t.Run("new key, another token", func(t *testing.T) { e.loginOK(t, g, e.mint(t, &r.idp, mintRequest{})) })
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	h, _, err := jwtParts(token)
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := h["kid"].(string)
	if kid == "" {
		t.Fatalf("token header %v has no kid", h)
	}
	return kid
}
