package binding

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"sync/atomic"
)

// Channel-binding types (RFC 5056 names, IANA "Channel-Binding Types").
const (
	TLSExporter       = "tls-exporter"         // RFC 9266, TLS 1.3 only
	TLSServerEndPoint = "tls-server-end-point" // RFC 5929 §4
)

// exporterLabel is RFC 9266 §2's label; the context is empty and the length 32.
const exporterLabel = "EXPORTER-Channel-Binding"

// ErrUnsupported is returned (wrapped) for a channel-binding type this package does not
// compute or a connection that cannot provide it, e.g. tls-exporter on TLS 1.2.
var ErrUnsupported = errors.New("binding: channel binding unsupported")

// CertThumbprint returns the RFC 8705 §3.1 x5t#S256 of a DER certificate: base64url,
// without padding, of its SHA-256.
func CertThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ExporterData returns the tls-exporter data of the connection (RFC 9266 §2). It refuses
// anything but TLS 1.3: on TLS 1.2 the exporter is only safe with Extended Master Secret
// and implementations disagree on the empty context.
func ExporterData(cs tls.ConnectionState) ([]byte, error) {
	if cs.Version != tls.VersionTLS13 {
		return nil, fmt.Errorf("%w: tls-exporter needs TLS 1.3, the connection has %s", ErrUnsupported, tls.VersionName(cs.Version))
	}
	return cs.ExportKeyingMaterial(exporterLabel, nil, 32)
}

// ServerEndPointData returns the tls-server-end-point data of the server's certificate
// (RFC 5929 §4.1): its DER hashed with the hash of its signature algorithm, SHA-256 when
// that is MD5 or SHA-1. Ed25519 and other algorithms without a separate hash are refused:
// RFC 5929 leaves them undefined.
func ServerEndPointData(cert *x509.Certificate) ([]byte, error) {
	if cert == nil {
		return nil, fmt.Errorf("%w: tls-server-end-point without a server certificate", ErrUnsupported)
	}
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, fmt.Errorf("%w: tls-server-end-point is undefined for %v certificates", ErrUnsupported, cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}

// Data returns the channel-binding data of cbType as the client of cs sees it: for
// tls-server-end-point, the certificate the server presented (cs.PeerCertificates[0]).
// A server uses ServerData, since its ConnectionState does not hold its own certificate.
func Data(cs tls.ConnectionState, cbType string) ([]byte, error) {
	var leaf *x509.Certificate
	if len(cs.PeerCertificates) > 0 {
		leaf = cs.PeerCertificates[0]
	}
	return ServerData(cs, leaf, cbType)
}

// ServerData returns the channel-binding data of cbType for the connection cs on which
// the server presented the certificate leaf (only tls-server-end-point reads it).
func ServerData(cs tls.ConnectionState, leaf *x509.Certificate, cbType string) ([]byte, error) {
	switch cbType {
	case TLSExporter:
		return ExporterData(cs)
	case TLSServerEndPoint:
		return ServerEndPointData(leaf)
	}
	return nil, fmt.Errorf("%w: unknown type %q (want %s or %s)", ErrUnsupported, cbType, TLSExporter, TLSServerEndPoint)
}

// Served records the certificate a server presented on one connection, which
// tls-server-end-point hashes: the certificate may be reloaded between the handshake and
// the authentication. The zero value has recorded nothing.
type Served struct {
	cert atomic.Pointer[tls.Certificate]
}

// ServerConfig returns a copy of base, for one connection, that records in the returned
// Served the certificate each handshake picks. base must set GetCertificate or
// Certificates. A server that runs the handshakes itself uses ListenerConfig instead: one
// copy for all its connections, which is 0.5 KB less per open connection.
func ServerConfig(base *tls.Config) (*tls.Config, *Served) {
	s := new(Served)
	cfg := base.Clone()
	pick := certPicker(base)
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := pick(hello)
		if err == nil {
			s.cert.Store(c)
		}
		return c, err
	}
	return cfg, s
}

// ListenerConfig returns a copy of base for every connection of a listener: a handshake
// run with tls.Conn.HandshakeContext(WithServed(ctx, s)) records in s the certificate it
// picks. base must set GetCertificate or Certificates.
func ListenerConfig(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	pick := certPicker(base)
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := pick(hello)
		if s, ok := hello.Context().Value(servedKey{}).(*Served); ok && err == nil {
			s.cert.Store(c)
		}
		return c, err
	}
	return cfg
}

type servedKey struct{}

// WithServed returns ctx carrying s, for a handshake with a ListenerConfig. ctx should have
// no Done channel (context.Background's children of WithValue have none): crypto/tls
// watches one with a goroutine of its own for each handshake.
func WithServed(ctx context.Context, s *Served) context.Context {
	return context.WithValue(ctx, servedKey{}, s)
}

// certPicker is base's choice of certificate: its GetCertificate, else crypto/tls's own
// choice among its Certificates, without its name index.
func certPicker(base *tls.Config) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	get := base.GetCertificate
	certs := base.Certificates
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		var c *tls.Certificate
		if get != nil {
			var err error
			if c, err = get(hello); err != nil {
				return nil, err
			}
		}
		if c == nil && len(certs) > 0 {
			c = &certs[0]
			for i := range certs {
				if hello.SupportsCertificate(&certs[i]) == nil {
					c = &certs[i]
					break
				}
			}
		}
		if c == nil {
			return nil, errors.New("binding: no server certificate")
		}
		return c, nil
	}
}

// Leaf returns the recorded certificate, parsed; nil when nothing was recorded.
func (s *Served) Leaf() (*x509.Certificate, error) {
	if s == nil {
		return nil, nil
	}
	c := s.cert.Load()
	if c == nil {
		return nil, nil
	}
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("binding: served certificate is empty")
	}
	return x509.ParseCertificate(c.Certificate[0])
}
