package smtp

import (
	"testing"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
	"github.com/saslgate/saslgate/tls/binding"
)

// TestChannelBindingFrontEnd: the session hands Authorize this connection's TLS state
// and served certificate, after implicit TLS and after go-smtp's STARTTLS alike.
func TestChannelBindingFrontEnd(t *testing.T) {
	e := newEnv(t, nil, func(s *Server) { s.Listener.ChannelBinding = proxy.ChannelBindingRequired })
	tok := e.token(t, demoissuer.Claims{})
	for _, implicit := range []bool{true, false} {
		for _, typ := range []string{binding.TLSExporter, binding.TLSServerEndPoint, "relayed"} {
			name := map[bool]string{true: "implicit/", false: "starttls/"}[implicit] + typ
			t.Run(name, func(t *testing.T) {
				c := e.dial(t, implicit)
				if !implicit {
					c.Send("EHLO client.example")
					c.Expect("250 ")
					c.startTLS(e)
				}
				c.Send("EHLO client.example")
				c.Expect("250 ")
				st := c.TLSState()
				cbType := typ
				if typ == "relayed" {
					other := e.dial(t, true)
					st, cbType = other.TLSState(), binding.TLSExporter
				}
				ir := fetest.BoundOAuthBearer(t, st, cbType, "alice", tok)
				c.Send("AUTH OAUTHBEARER " + ir)
				if typ != "relayed" {
					c.Expect("235 ")
					return
				}
				if s := errorStatus(t, c.Expect("334 ")[0]); s != "invalid_request" {
					t.Errorf("relayed cbdata: status %q, want invalid_request", s)
				}
				c.Send("AQ==")
				c.Expect("535 5.7.8")
			})
		}
	}
	t.Run("n refused when required", func(t *testing.T) {
		c := e.dial(t, true)
		c.Send("EHLO client.example")
		c.Expect("250 ")
		c.Send("AUTH OAUTHBEARER " + oauthbearer("alice", tok))
		if s := errorStatus(t, c.Expect("334 ")[0]); s != "invalid_request" {
			t.Errorf("status %q, want invalid_request", s)
		}
	})
}
