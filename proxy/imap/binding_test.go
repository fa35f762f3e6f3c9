package imap

import (
	"testing"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
	"github.com/saslgate/saslgate/tls/binding"
)

// TestChannelBindingFrontEnd: the connection's TLS state and served certificate reach
// Authorize after implicit TLS and after STARTTLS.
func TestChannelBindingFrontEnd(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Listener.ChannelBinding = proxy.ChannelBindingRequired })
	tok := e.Issuer.Token(t, demoissuer.Claims{})
	for _, implicit := range []bool{true, false} {
		for _, typ := range []string{binding.TLSExporter, binding.TLSServerEndPoint, "relayed"} {
			name := map[bool]string{true: "implicit/", false: "starttls/"}[implicit] + typ
			t.Run(name, func(t *testing.T) {
				c := e.dial(t, implicit)
				if !implicit {
					c.Send("s STARTTLS")
					c.Expect("s OK ")
					c.StartTLS(e.Cert.ClientTLS())
				}
				st := c.TLSState()
				cbType := typ
				if typ == "relayed" {
					other := e.dial(t, true)
					st, cbType = other.TLSState(), binding.TLSExporter
				}
				ir := fetest.BoundOAuthBearer(t, st, cbType, "alice", tok)
				c.Send("a AUTHENTICATE OAUTHBEARER " + ir)
				if typ != "relayed" {
					c.Expect("a OK ")
					return
				}
				if s := errorStatus(t, c.Expect("+ ")); s != "invalid_request" {
					t.Errorf("relayed cbdata: status %q, want invalid_request", s)
				}
				c.Send("AQ==")
				c.Expect("a NO [AUTHENTICATIONFAILED]")
			})
		}
	}
}
