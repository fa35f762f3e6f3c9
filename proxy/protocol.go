package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/saslgate/saslgate/backends"
)

// Protocol is one front end as the program wires it: its name, its configuration section
// and how to serve a listener. Each front end package exports its own (imap.Protocol,
// smtp.Protocol); cmd/saslgate lists them once, in its protocol registry, and config
// validation, serving, reloading, readiness and discovery iterate that list. There is no
// registry here: a program serves the protocols it lists.
type Protocol struct {
	// Name is the protocol's one name, wherever a protocol is named: a listener's
	// "protocol:", the key of its configuration section, the key of an issuer's scopes
	// (introspect.IssuerConfig.Scopes), Attempt.Protocol, and the metrics' protocol label.
	Name string
	// ImplicitPort and StartTLSPort are the protocol's registered ports with implicit TLS
	// (RFC 8314) and with STARTTLS, for defaults and documentation.
	ImplicitPort, StartTLSPort int
	// Autoconfig is where mail clients' autoconfig document (Thunderbird's config-v1.1.xml,
	// whose server type is Name) lists the protocol's listeners: AutoconfigIncoming,
	// AutoconfigOutgoing, or "" for a protocol the format has no type for (ManageSieve),
	// whose listeners are not announced there.
	Autoconfig string
	// NewSection returns the protocol's configuration section with nothing set, as a
	// pointer for the decoder to fill.
	NewSection func() Section
	// NewServer returns the server of one listener of this protocol; deps.Section is a
	// value NewSection returned, decoded and validated.
	NewServer func(deps ServerDeps) Server
}

// Protocol.Autoconfig values.
const (
	AutoconfigIncoming = "incoming" // an incomingServer element (IMAP, POP3)
	AutoconfigOutgoing = "outgoing" // an outgoingServer element (SMTP)
)

// Section is a protocol's configuration section (imap.Config, smtp.Config).
type Section interface {
	// Validate names every bad field, prefixed with the section's name ("imap.backend").
	Validate() error
	// Backends is where the protocol's logins go when no route source knows the user: the
	// name of a pool of the top-level pools section, or one backend server (the shorthand for
	// a one-member pool). Exactly one is set (ValidateBackend).
	Backends() (pool string, backend backends.Config)
}

// ValidateBackend checks a section's pool and backend fields: exactly one is set, and a
// backend is a valid one. The pool's existence is the whole file's to check.
func ValidateBackend(section, pool string, backend backends.Config) error {
	switch {
	case pool != "" && backend != (backends.Config{}):
		return fmt.Errorf("%s.pool and %s.backend: set one, not both (a backend is a one-member pool: list it as a member of the pool)", section, section)
	case pool != "":
		return nil
	case backend == (backends.Config{}):
		return fmt.Errorf("%s.pool or %s.backend: one is required (pool: a pool's name from the pools section; backend: one server)", section, section)
	}
	if err := backend.Validate(); err != nil {
		return fmt.Errorf("%s.backend: %w", section, err)
	}
	return nil
}

// ServerDeps is what a front end's server is built from: one listener, its protocol's
// section, and what every listener shares.
type ServerDeps struct {
	Listener  ListenerConfig
	Section   Section     // the protocol's section, as Protocol.NewSection made it
	TLSConfig *tls.Config // the served certificate; the server adds client-certificate requests
	Login     *Login      // one pipeline for every listener
	Limits    Limits
	Logger    *slog.Logger
	Observer  Observer // nil: nothing observed
}

// Server is a front end's server of one listener, in the manner of net/http's.
type Server interface {
	// Serve accepts connections on ln until Shutdown or Close; it returns ErrServerClosed
	// after either.
	Serve(ln net.Listener) error
	// Shutdown stops accepting, waits for open sessions to end until ctx is done, then
	// closes those left.
	Shutdown(ctx context.Context) error
	// Close stops accepting and closes every session at once.
	Close() error
}
