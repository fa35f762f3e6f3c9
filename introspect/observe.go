package introspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Observer receives what a Validator does, for metrics. Its methods are called on the
// validation path, concurrently, and must be cheap.
type Observer interface {
	// ObserveValidation reports one Validate call: the mode of the issuer that decided
	// ("jwt", "introspection", "userinfo"; "none" when the token was refused before reaching
	// one), whether the result came from the cache, and how long the call took.
	ObserveValidation(mode string, cached bool, d time.Duration)
	// ObserveIdPRequest reports one HTTP request to an identity provider: the issuer, its
	// kind (IdPDiscovery, IdPJWKS, IdPIntrospection, IdPUserinfo), and whether it failed (no
	// answer, or an error status other than a userinfo endpoint refusing the token).
	ObserveIdPRequest(issuer, kind string, failed bool)
}

// The kinds of identity provider request reported to an Observer.
const (
	IdPDiscovery     = "discovery"
	IdPJWKS          = "jwks"
	IdPIntrospection = "introspection"
	IdPUserinfo      = "userinfo"
)

// WithObserver reports validations and identity provider requests to o.
func WithObserver(o Observer) Option { return func(v *Validator) { v.obs = o } }

// modeNone is the mode reported for tokens no issuer looked at.
const modeNone = "none"

// modeOf is the mode of the issuer that decided a validation.
func (v *Validator) modeOf(id Identity, err error) string {
	if err == nil {
		if is := v.issuers[id.Issuer]; is != nil {
			return is.cfg.Mode
		}
		return modeNone
	}
	var e *Error
	if errors.As(err, &e) && e.mode != "" {
		return e.mode
	}
	return modeNone
}

func (v *Validator) observe(start time.Time, cached bool, id Identity, err error) {
	if v.obs != nil {
		v.obs.ObserveValidation(v.modeOf(id, err), cached, time.Since(start))
	}
}

// Ready reports whether every issuer can validate tokens now: for mode jwt, its signing keys
// are loaded; for introspection and userinfo, its endpoint is known (from the configuration
// or its metadata). What is missing is fetched, within the same rate limits and backoff as
// validation, so a readiness probe also warms the validator up. The error names each issuer
// that is not ready.
func (v *Validator) Ready(ctx context.Context) error {
	names := make([]string, 0, len(v.issuers))
	for name := range v.issuers {
		names = append(names, name)
	}
	slices.Sort(names)
	var errs []error
	for _, name := range names {
		is := v.issuers[name]
		var e *Error
		if is.keys != nil {
			_, e = is.keys.keysFor(ctx, "")
		} else {
			_, e = is.endpoint.get(ctx)
		}
		if e != nil {
			errs = append(errs, fmt.Errorf("issuer %s: %w", name, e))
		}
	}
	return errors.Join(errs...)
}
