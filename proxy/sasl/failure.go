package sasl

import "encoding/json"

// Status values of a Failure: the OAuth error codes of RFC 6750 §3.1 that
// RFC 7628 §3.2.2 reuses.
const (
	StatusInvalidToken      = "invalid_token"
	StatusInsufficientScope = "insufficient_scope"
	StatusInvalidRequest    = "invalid_request"
)

// Failure is an authentication failure reported with the RFC 7628 §3.2.2
// error challenge. An Authenticator returns one (errors.As finds it through
// wrapping) to make the mechanism send the challenge and, after the client's
// reply, fail the exchange with this Failure.
type Failure struct {
	Status              string // "invalid_token" (used when empty), "insufficient_scope", "invalid_request"
	Scope               string // optional, space-separated
	OpenIDConfiguration string // optional URL of the issuer's discovery document
	Err                 error  // underlying cause (for logs), Unwrap returns it
}

// Error returns the status and the underlying cause.
func (f *Failure) Error() string {
	if f == nil {
		return "sasl: authentication failed"
	}
	s := "sasl: authentication failed (" + f.status() + ")"
	if f.Err != nil {
		s += ": " + f.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (f *Failure) Unwrap() error {
	if f == nil {
		return nil
	}
	return f.Err
}

func (f *Failure) status() string {
	if f.Status == "" {
		return StatusInvalidToken
	}
	return f.Status
}

// oauthBearerJSON is the RFC 7628 §3.2.2 error challenge.
func (f *Failure) oauthBearerJSON() []byte {
	return marshal(struct {
		Status              string `json:"status"`
		Scope               string `json:"scope,omitempty"`
		OpenIDConfiguration string `json:"openid-configuration,omitempty"`
	}{f.status(), f.Scope, f.OpenIDConfiguration})
}

// xoauth2JSON is the error challenge of Google's XOAUTH2, which carries the
// HTTP status RFC 6750 §3.1 gives each error code instead of the code itself.
func (f *Failure) xoauth2JSON() []byte {
	status := "401"
	switch f.status() {
	case StatusInvalidRequest:
		status = "400"
	case StatusInsufficientScope:
		status = "403"
	}
	return marshal(struct {
		Status  string `json:"status"`
		Schemes string `json:"schemes"`
		Scope   string `json:"scope,omitempty"`
	}{status, "bearer", f.Scope})
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Unreachable: structs of strings always marshal (invalid UTF-8 is
		// replaced). A challenge must still go out.
		return []byte(`{"status":"invalid_token"}`)
	}
	return b
}
