package fetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"testing"

	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/tls/certs"
)

// Issuer is a demo issuer served on loopback for the life of a test, knowing the user alice.
type Issuer struct {
	*demoissuer.Issuer
	URL string
}

// NewIssuer starts a demo issuer; the test's cleanup stops it.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	url := "http://" + hs.Listener.Addr().String()
	iss, err := demoissuer.New(url, map[string]string{"alice": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = iss.Handler()
	hs.Start()
	t.Cleanup(hs.Close)
	return &Issuer{Issuer: iss, URL: url}
}

// Validator checks the issuer's JWTs for the audience "saslgate", the user in "sub"; scopes
// is the issuer's IssuerConfig.Scopes.
func (i *Issuer) Validator(t testing.TB, scopes map[string][]string) *introspect.Validator {
	t.Helper()
	v, err := introspect.New(context.Background(), introspect.Config{Issuers: []introspect.IssuerConfig{{
		Issuer: i.URL, Mode: "jwt", Audience: []string{"saslgate"}, UsernameClaim: "sub", Scopes: scopes,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Token mints a token with the claims c, for alice unless c names another subject.
func (i *Issuer) Token(t testing.TB, c demoissuer.Claims) string {
	t.Helper()
	if c.Subject == "" {
		c.Subject = "alice"
	}
	tok, err := i.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Cert is a self-signed certificate for 127.0.0.1 and the pool clients trust it from.
type Cert struct {
	cert  tls.Certificate
	Roots *x509.CertPool
}

// NewCert makes a self-signed certificate for 127.0.0.1.
func NewCert(t testing.TB) *Cert {
	t.Helper()
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{cert: cert, Roots: x509.NewCertPool()}
	c.Roots.AppendCertsFromPEM(certPEM)
	return c
}

// ServerTLS is a fresh server configuration serving the certificate.
func (c *Cert) ServerTLS() *tls.Config { return certs.FromCertificate(c.cert).TLSConfig() }

// ClientTLS is a fresh client configuration that trusts the certificate for 127.0.0.1.
func (c *Cert) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.Roots, ServerName: "127.0.0.1"}
}
