package smtp

import (
	"crypto/tls"
	"testing"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/sasl"
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
					c.send("EHLO client.example")
					c.expect("250 ")
					c.startTLS(e)
				}
				c.send("EHLO client.example")
				c.expect("250 ")
				st := c.nc.(*tls.Conn).ConnectionState()
				cbType := typ
				if typ == "relayed" {
					other := e.dial(t, true)
					st, cbType = other.nc.(*tls.Conn).ConnectionState(), binding.TLSExporter
				}
				data, err := binding.Data(st, cbType)
				if err != nil {
					t.Fatal(err)
				}
				ir := b64(string(sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: "alice", Token: tok, CBFlag: 'p', CBType: cbType, CBData: data})))
				c.send("AUTH OAUTHBEARER " + ir)
				if typ != "relayed" {
					c.expect("235 ")
					return
				}
				if s := errorStatus(t, c.expect("334 ")[0]); s != "invalid_request" {
					t.Errorf("relayed cbdata: status %q, want invalid_request", s)
				}
				c.send("AQ==")
				c.expect("535 5.7.8")
			})
		}
	}
	t.Run("n refused when required", func(t *testing.T) {
		c := e.dial(t, true)
		c.send("EHLO client.example")
		c.expect("250 ")
		c.send("AUTH OAUTHBEARER " + oauthbearer("alice", tok))
		if s := errorStatus(t, c.expect("334 ")[0]); s != "invalid_request" {
			t.Errorf("status %q, want invalid_request", s)
		}
	})
}
