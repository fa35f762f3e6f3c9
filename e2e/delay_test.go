package e2e

import (
	"testing"
	"time"
)

// TestAuthFailureDelay runs the real binary with the failed-authentication delay on (every
// other e2e gate turns it off): after auth_failures refused tokens from one address, the
// next answer is held back by auth_delay, a failure's and a success's alike, so a client
// guessing tokens cannot tell sooner. Only lower bounds are asserted.
func TestAuthFailureDelay(t *testing.T) {
	e := e2e(t)
	const delay = 600 * time.Millisecond
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-delay",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		limits:  "{auth_failures: 2, auth_failure_window: 10m, auth_delay: 600ms, max_auth_delay: 600ms, max_connections_per_ip: 1000}",
	})
	bad := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) // expired
	for range 2 {
		e.loginRefused(t, g, bad)
	}

	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	start := time.Now()
	authFails(t, w, "OAUTHBEARER", oauthBearerIR(mailUser, "", 0, bad), "invalid_token", "AQ==")
	if d := time.Since(start); d < delay {
		t.Errorf("the third failure was answered after %v; the delay is %v", d, delay)
	}

	// A good token from the same address waits as well: the delay is decided before the
	// token is looked at.
	good := e.mint(t, e.idp, mintRequest{})
	w = dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	start = time.Now()
	e.login(t, w, "a", good)
	if d := time.Since(start); d < delay {
		t.Errorf("the login after three failures was answered after %v; the delay is %v", d, delay)
	}
}

// TestAuthDelayNotErasedBySuccess: a client mixing good tokens with forged ones stays delayed.
// Before, one success forgot every failure of the address, so four bad tokens and a good one,
// repeated, were never slowed down.
func TestAuthDelayNotErasedBySuccess(t *testing.T) {
	e := e2e(t)
	const delay = 600 * time.Millisecond
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-delay-mixed",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		limits:  "{auth_failures: 3, auth_failure_window: 10m, auth_delay: 600ms, max_auth_delay: 600ms, max_connections_per_ip: 1000}",
	})
	bad := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) // expired
	good := e.mint(t, e.idp, mintRequest{})
	for range 2 {
		e.loginRefused(t, g, bad)
		e.loginRefused(t, g, bad)
		e.loginOK(t, g, good)
	}
	// Four failures, two successes in between: still delayed.
	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	start := time.Now()
	authFails(t, w, "OAUTHBEARER", oauthBearerIR(mailUser, "", 0, bad), "invalid_token", "AQ==")
	if d := time.Since(start); d < delay {
		t.Errorf("after 4 failures and 2 successes the next failure was answered after %v; the delay is %v", d, delay)
	}
}
