package sieve

import (
	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
)

// Protocol is the ManageSieve front end as cmd/saslgate's protocol registry lists it:
// listeners with protocol: sieve, served by Server, and the configuration's sieve section,
// Config. The protocol has no implicit-TLS port: 4190 (RFC 5804 §1.8, IANA "sieve") speaks
// STARTTLS; a listener with tls: implicit is still served. Mail clients' autoconfig has no
// server type for it, so its listeners are not announced there.
var Protocol = proxy.Protocol{
	Name:         "sieve",
	ImplicitPort: 0,
	StartTLSPort: 4190,
	Autoconfig:   "",
	NewSection:   func() proxy.Section { return new(Config) },
	NewServer: func(d proxy.ServerDeps) proxy.Server {
		return &Server{
			Listener:  d.Listener,
			Config:    *d.Section.(*Config),
			TLSConfig: d.TLSConfig,
			Login:     d.Login,
			Limits:    d.Limits,
			Logger:    d.Logger,
			Observer:  d.Observer,
		}
	},
}

var (
	_ proxy.Section = Config{}
	_ proxy.Server  = (*Server)(nil)
)

// Backends is the section's default pool, or its one backend (proxy.Section).
func (c Config) Backends() (pool string, backend backends.Config) { return c.Pool, c.Backend }
