package imap

import (
	"bufio"
	"crypto/tls"
	"testing"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/binding"
)

// TestChannelBindingFrontEnd: the connection's TLS state and served certificate reach
// Authorize after implicit TLS and after STARTTLS.
func TestChannelBindingFrontEnd(t *testing.T) {
	e := newEnv(t, func(s *Server) { s.Listener.ChannelBinding = proxy.ChannelBindingRequired })
	tok := e.token(t, demoissuer.Claims{})
	for _, implicit := range []bool{true, false} {
		for _, typ := range []string{binding.TLSExporter, binding.TLSServerEndPoint, "relayed"} {
			name := map[bool]string{true: "implicit/", false: "starttls/"}[implicit] + typ
			t.Run(name, func(t *testing.T) {
				c := e.dial(t, implicit)
				if !implicit {
					c.send("s STARTTLS")
					c.expect("s OK ")
					tc := tls.Client(c.nc, &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
					if err := tc.Handshake(); err != nil {
						t.Fatal(err)
					}
					c.nc, c.br = tc, bufio.NewReader(tc)
				}
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
				c.send("a AUTHENTICATE OAUTHBEARER " + ir)
				if typ != "relayed" {
					c.expect("a OK ")
					return
				}
				if s := errorStatus(t, c.expect("+ ")); s != "invalid_request" {
					t.Errorf("relayed cbdata: status %q, want invalid_request", s)
				}
				c.send("AQ==")
				c.expect("a NO [AUTHENTICATIONFAILED]")
			})
		}
	}
}
