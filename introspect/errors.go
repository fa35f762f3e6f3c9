package introspect

import "errors"

// The kinds of validation failure; every error returned by Validate is an *Error whose Kind is one
// of these (errors.Is works on the *Error).
var (
	// ErrInvalidToken: the token is malformed, badly signed, expired, not for us, or maps to no
	// usable username (RFC 6750 §3.1 invalid_token).
	ErrInvalidToken = errors.New("introspect: invalid token")
	// ErrInsufficientScope: the token is valid but lacks a scope the protocol requires
	// (RFC 6750 §3.1 insufficient_scope).
	ErrInsufficientScope = errors.New("introspect: insufficient scope")
	// ErrTemporary: the token could not be checked now (identity provider unreachable, slow or
	// answering nonsense); the client may retry later.
	ErrTemporary = errors.New("introspect: temporary failure")
)

// Error is a validation failure. It carries what the RFC 7628 §3.2.2 error challenge needs
// (Scope, Discovery) and a short reason for logs. It never contains the token.
type Error struct {
	Kind      error  // ErrInvalidToken, ErrInsufficientScope or ErrTemporary; Unwrap returns it
	Reason    string // short human reason for logs ("token expired", "audience mismatch", ...)
	Scope     string // required scopes, space-separated, for ErrInsufficientScope
	Discovery string // the issuer's discovery URL when the issuer is known

	cause error  // detail for logs (an HTTP or verifier error); never holds the token
	mode  string // the mode of the issuer that decided, for Observer; "" until Validator.fail
}

// Error returns the kind, the reason and the underlying cause, if any.
func (e *Error) Error() string {
	s := "introspect: error"
	if e.Kind != nil {
		s = e.Kind.Error()
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap returns Kind.
func (e *Error) Unwrap() error { return e.Kind }

func invalid(reason string) *Error { return &Error{Kind: ErrInvalidToken, Reason: reason} }

func temporary(reason string, cause error) *Error {
	return &Error{Kind: ErrTemporary, Reason: reason, cause: cause}
}
