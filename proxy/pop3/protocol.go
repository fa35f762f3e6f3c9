package pop3

import (
	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
)

// Protocol is the POP3 front end as cmd/saslgate's protocol registry lists it: listeners
// with protocol: pop3, served by Server, and the configuration's pop3 section, Config.
var Protocol = proxy.Protocol{
	Name:         "pop3",
	ImplicitPort: 995, // RFC 8314 §7.4
	StartTLSPort: 110, // IANA "pop3", with STLS (RFC 2595 §4)
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
