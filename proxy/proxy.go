package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// Validator validates an access token for one protocol. *introspect.Validator
// satisfies it.
type Validator interface {
	Validate(ctx context.Context, r introspect.Request) (introspect.Identity, error)
}

// SecretSource returns a user's backend secret. The sources of package
// backends satisfy it.
type SecretSource interface {
	Secret(ctx context.Context, user string) (backends.Secret, error)
}

// Listener TLS modes.
const (
	TLSImplicit = "implicit" // TLS from the first byte (993, 465; RFC 8314)
	TLSStartTLS = "starttls" // plaintext until STARTTLS (143, 587)
)

// ListenerConfig is one listening socket.
type ListenerConfig struct {
	Name     string `yaml:"name"`
	Protocol string `yaml:"protocol"` // "imap" or "smtp"
	Address  string `yaml:"address"`
	TLS      string `yaml:"tls"` // TLSImplicit or TLSStartTLS
	// PublicHost and PublicPort are the name and port clients connect to
	// (behind a load balancer, not the bound address). When set, OAUTHBEARER
	// host= and port= must match them (RFC 7628 §3.2).
	PublicHost string `yaml:"public_host"`
	PublicPort int    `yaml:"public_port"`
}

// Validate names every bad field; prefix is the field path ("listeners[0]").
func (l ListenerConfig) Validate(prefix string) error {
	var errs []error
	if l.Name == "" {
		errs = append(errs, fmt.Errorf("%s.name is required", prefix))
	}
	switch l.Protocol {
	case "imap", "smtp":
	case "":
		errs = append(errs, fmt.Errorf("%s.protocol is required (imap or smtp)", prefix))
	default:
		errs = append(errs, fmt.Errorf("%s.protocol %q is not supported (imap or smtp)", prefix, l.Protocol))
	}
	if _, _, err := net.SplitHostPort(l.Address); err != nil {
		errs = append(errs, fmt.Errorf("%s.address %q: want host:port", prefix, l.Address))
	}
	if l.TLS != TLSImplicit && l.TLS != TLSStartTLS {
		errs = append(errs, fmt.Errorf("%s.tls %q: want %q or %q", prefix, l.TLS, TLSImplicit, TLSStartTLS))
	}
	if l.PublicPort < 0 || l.PublicPort > 65535 {
		errs = append(errs, fmt.Errorf("%s.public_port %d out of range", prefix, l.PublicPort))
	}
	return errors.Join(errs...)
}

// Authorize runs the protocol-independent checks of one SASL OAuth message and
// returns the validated identity. Failures the client caused are *sasl.Failure
// (sent as the RFC 7628 error challenge); anything else (errors.Is
// introspect.ErrTemporary) is a temporary failure.
func Authorize(ctx context.Context, v Validator, l ListenerConfig, protocol string, c sasl.Credentials) (introspect.Identity, error) {
	// RFC 7628 §3.2: key/value pairs known to the server "MUST be validated to match".
	if c.Host != "" && l.PublicHost != "" && !strings.EqualFold(c.Host, l.PublicHost) {
		return introspect.Identity{}, &sasl.Failure{Status: "invalid_request", Err: fmt.Errorf("proxy: host=%q, listener serves %q", c.Host, l.PublicHost)}
	}
	if c.Port != 0 && l.PublicPort != 0 && c.Port != l.PublicPort {
		return introspect.Identity{}, &sasl.Failure{Status: "invalid_request", Err: fmt.Errorf("proxy: port=%d, listener serves %d", c.Port, l.PublicPort)}
	}
	// RFC 7628 defines no channel binding and saslgate advertises no -PLUS
	// mechanism: "n" and "y" are fine; "p=" asks for binding we do not offer.
	if c.CBFlag == 'p' {
		return introspect.Identity{}, &sasl.Failure{Status: "invalid_request", Err: fmt.Errorf("proxy: channel binding %q requested but not enabled", c.CBType)}
	}
	id, err := v.Validate(ctx, introspect.Request{Token: c.Token, Protocol: protocol})
	if err != nil {
		var ie *introspect.Error
		switch {
		case errors.Is(err, introspect.ErrTemporary):
			return id, err
		case errors.As(err, &ie) && errors.Is(err, introspect.ErrInsufficientScope):
			return id, &sasl.Failure{Status: "insufficient_scope", Scope: ie.Scope, OpenIDConfiguration: ie.Discovery, Err: err}
		case errors.As(err, &ie):
			return id, &sasl.Failure{Status: "invalid_token", OpenIDConfiguration: ie.Discovery, Err: err}
		default:
			// Not a verdict on the token (cancelled, unexpected): never call it invalid.
			return id, err
		}
	}
	// The authorization identity (a= / user=) must be the token's user or absent:
	// saslgate never lets one user act as another.
	if c.AuthzID != "" && !strings.EqualFold(c.AuthzID, id.User) {
		return id, &sasl.Failure{Status: "invalid_token", Err: fmt.Errorf("proxy: authorization identity %q is not the token's user %q", c.AuthzID, id.User)}
	}
	return id, nil
}
