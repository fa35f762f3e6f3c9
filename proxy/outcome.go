package proxy

import (
	"errors"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// Kind says what an authentication attempt came to. Each front end answers each Kind from one
// table (DESIGN.md "Errors"); metrics and `saslgate token verify` read the same value.
type Kind uint8

// The kinds of Outcome.
const (
	// Success: the token is good, the policy allows it, and the backend session is open.
	Success Kind = iota
	// Refused: the token, or saslgate's policy for it (host/port, authzid, channel binding,
	// certificate binding), was refused; Outcome.Failure is the RFC 7628 error challenge.
	Refused
	// Malformed: the client's SASL message or command could not be parsed.
	Malformed
	// IdPUnavailable: no verdict on the token could be had (IdP down, slow, answering
	// nonsense): the client may retry.
	IdPUnavailable
	// BackendUnavailable: the backend could not be reached or did not answer in time.
	BackendUnavailable
	// BackendRefused: the backend refused the login with the user's secret, or saslgate has
	// no secret for the user. The token was good: the client is told to retry later, and an
	// admin must look (the log says so, rate-limited).
	BackendRefused
	// Delayed: the failed-authentication delay would outlast the pre-authentication time, or
	// the server shut down during it; the attempt was never looked at.
	Delayed
	// Error: anything else (a bug, a cancelled context); answered as a temporary failure.
	Error
)

var kindNames = [...]string{"success", "refused", "malformed", "idp_unavailable", "backend_unavailable", "backend_refused", "delayed", "error"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Outcome is one authentication attempt's result, classified once (Classify).
type Outcome struct {
	Kind Kind
	// Failure is the RFC 7628 error of a Refused outcome (status, scope, openid-configuration).
	Failure *sasl.Failure
	// Identity is the validated token's identity, once validation succeeded.
	Identity introspect.Identity
	// Err is the cause, for logs; nil on Success. It never holds a token or secret.
	Err error
}

// Result is the outcome's metric and audit label: "success", the RFC 7628 status of a refusal
// (invalid_token, insufficient_scope, invalid_request), "malformed", "unavailable" (IdP),
// "backend_rejected", "backend_unavailable", "delayed" or "error". The set is closed
// (Results), so no client can grow a metric's series.
func (o Outcome) Result() string {
	switch o.Kind {
	case Success:
		return "success"
	case Refused:
		if o.Failure != nil && (o.Failure.Status == sasl.StatusInsufficientScope || o.Failure.Status == sasl.StatusInvalidRequest) {
			return o.Failure.Status
		}
		return sasl.StatusInvalidToken
	case Malformed:
		return "malformed"
	case IdPUnavailable:
		return "unavailable"
	case BackendRefused:
		return "backend_rejected"
	case BackendUnavailable:
		return "backend_unavailable"
	case Delayed:
		return "delayed"
	}
	return "error"
}

// Results lists every value Outcome.Result returns.
var Results = []string{
	"success",
	sasl.StatusInvalidToken, sasl.StatusInsufficientScope, sasl.StatusInvalidRequest,
	"malformed", "unavailable", "backend_rejected", "backend_unavailable", "delayed", "error",
}

// ErrDelayed is the cause of a Delayed outcome.
var ErrDelayed = errors.New("proxy: authentication delay outlasts the pre-authentication time")

// Classify sorts an error of the login pipeline, the SASL mechanisms, introspect or backends
// into an Outcome: the one place where those packages' errors meet the error table. A nil
// error is Success.
func Classify(err error) Outcome {
	o := Outcome{Err: err}
	var f *sasl.Failure
	switch {
	case err == nil:
		o.Kind = Success
	case errors.As(err, &f):
		o.Kind, o.Failure = Refused, f
	case errors.Is(err, ErrDelayed):
		o.Kind = Delayed
	case errors.Is(err, sasl.ErrMalformed):
		o.Kind = Malformed
	case errors.Is(err, introspect.ErrTemporary):
		o.Kind = IdPUnavailable
	case errors.Is(err, backends.ErrRejected), errors.Is(err, backends.ErrUnknownUser):
		o.Kind = BackendRefused
	case errors.Is(err, backends.ErrUnavailable):
		o.Kind = BackendUnavailable
	default:
		o.Kind = Error
	}
	return o
}

// Mechanisms are the values of Attempt.Mechanism: the SASL mechanisms every front end offers,
// and LOGIN for a token sent as a password.
var Mechanisms = []string{sasl.OAuthBearer, sasl.XOAuth2, "LOGIN"}
