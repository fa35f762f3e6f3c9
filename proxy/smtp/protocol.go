package smtp

import (
	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
)

// Protocol is the SMTP submission front end as cmd/saslgate's protocol registry lists it:
// listeners with protocol: smtp, served by Server, and the configuration's smtp section,
// Config.
var Protocol = proxy.Protocol{
	Name:         "smtp",
	ImplicitPort: 465, // submissions, RFC 8314 §7.3
	StartTLSPort: 587, // submission, RFC 6409 §3.1
	Autoconfig:   proxy.AutoconfigOutgoing,
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
