package imap

import (
	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
)

// Protocol is the IMAP front end as cmd/saslgate's protocol registry lists it: listeners
// with protocol: imap, served by Server, and the configuration's imap section, Config.
var Protocol = proxy.Protocol{
	Name:         "imap",
	ImplicitPort: 993, // RFC 8314 §7.3
	StartTLSPort: 143, // IANA "imap", with STARTTLS (RFC 9051 §6.2.1)
	Autoconfig:   proxy.AutoconfigIncoming,
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
