package proxy

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/binding"
)

// Validator validates an access token for one protocol. *introspect.Validator
// satisfies it.
type Validator interface {
	Validate(ctx context.Context, r introspect.Request) (introspect.Identity, error)
}

// SecretSource returns a user's backend secret. The sources of package
// backends satisfy it.
type SecretSource interface {
	Secret(ctx context.Context, user string) (backends.Secret, error)
}

// Listener TLS modes.
const (
	TLSImplicit = "implicit" // TLS from the first byte (993, 465; RFC 8314)
	TLSStartTLS = "starttls" // plaintext until STARTTLS (143, 587)
)

// Client certificate modes (ListenerConfig.ClientCertificates).
const (
	ClientCertNone    = "none"    // no certificate asked for (the default)
	ClientCertRequest = "request" // asked for, optional, any certificate, self-signed too (RFC 8705 §2.2)
	ClientCertVerify  = "verify"  // asked for, optional, and must chain to client_ca_file when sent
)

// Channel-binding policies (ListenerConfig.ChannelBinding) for OAUTHBEARER's GS2 flag
// and the cbdata kvpair of draft-ietf-kitten-sasl-oauth-03.
const (
	ChannelBindingOff      = "off"      // n and y accepted, p= refused (the default, like Dovecot)
	ChannelBindingOptional = "optional" // n and y accepted, p= verified
	ChannelBindingRequired = "required" // only a verified p=; XOAUTH2, which cannot bind, fails
)

// ListenerConfig is one listening socket.
type ListenerConfig struct {
	Name     string `yaml:"name"`
	Protocol string `yaml:"protocol"` // a Protocol.Name
	Address  string `yaml:"address"`
	TLS      string `yaml:"tls"` // TLSImplicit or TLSStartTLS
	// PublicHost and PublicPort are the name and port clients connect to
	// (behind a load balancer, not the bound address). When set, OAUTHBEARER
	// host= and port= must match them (RFC 7628 §3.2).
	PublicHost string `yaml:"public_host"`
	PublicPort int    `yaml:"public_port"`
	// ClientCertificates asks TLS clients for a certificate, which RFC 8705
	// certificate-bound tokens are checked against: ClientCertNone (default),
	// ClientCertRequest or ClientCertVerify (with ClientCAFile).
	ClientCertificates string `yaml:"client_certificates"`
	ClientCAFile       string `yaml:"client_ca_file"`
	// ChannelBinding is ChannelBindingOff (default), ChannelBindingOptional or
	// ChannelBindingRequired.
	ChannelBinding string `yaml:"channel_binding"`
	// RequireBoundTokens rejects tokens without cnf.x5t#S256 (RFC 8705 §3), so that
	// binding never silently degrades to bearer. It needs client certificates.
	RequireBoundTokens bool `yaml:"require_bound_tokens"`
	// ProxyProtocol expects a PROXY protocol header (HAProxy's, v1 or v2) before anything
	// else, TLS included, on every connection; its source address is then the client's
	// address everywhere (logs, limits, forwarding to the backend). Connections from peers
	// outside ProxyTrustedNetworks, which it requires, are closed unread.
	ProxyProtocol        bool     `yaml:"proxy_protocol"`
	ProxyTrustedNetworks []string `yaml:"proxy_trusted_networks"`
	// HandshakeTimeout bounds each TLS handshake, the implicit one and the one after
	// STARTTLS (default DefaultHandshakeTimeout), within the pre-authentication time: a
	// client that opens connections and stalls in the handshake holds a slot this long.
	HandshakeTimeout config.Duration `yaml:"handshake_timeout"`
}

// DefaultHandshakeTimeout is ListenerConfig.HandshakeTimeout's default.
const DefaultHandshakeTimeout = 10 * time.Second

// HandshakeDeadline is when a TLS handshake that starts now must be done: the listener's
// handshake timeout from now, or the pre-authentication deadline if that comes first.
func (l ListenerConfig) HandshakeDeadline(preauth time.Time) time.Time {
	d := time.Now().Add(l.HandshakeTimeout.Or(DefaultHandshakeTimeout))
	if preauth.Before(d) {
		return preauth
	}
	return d
}

// trustedNetworks parses ProxyTrustedNetworks; a bare address is a one-address network.
func (l ListenerConfig) trustedNetworks() ([]netip.Prefix, error) {
	var nets []netip.Prefix
	for _, s := range l.ProxyTrustedNetworks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("proxy: listener %s: proxy_trusted_networks: %q is not a CIDR network", l.Name, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		nets = append(nets, p.Masked())
	}
	return nets, nil
}

func (l ListenerConfig) clientCertificates() string {
	if l.ClientCertificates == "" {
		return ClientCertNone
	}
	return l.ClientCertificates
}

func (l ListenerConfig) channelBinding() string {
	if l.ChannelBinding == "" {
		return ChannelBindingOff
	}
	return l.ChannelBinding
}

// Validate names every bad field; prefix is the field path ("listeners[0]").
func (l ListenerConfig) Validate(prefix string) error {
	var errs []error
	if l.Name == "" {
		errs = append(errs, fmt.Errorf("%s.name is required", prefix))
	}
	// Which names are served is the program's protocol registry: it checks them.
	if l.Protocol == "" {
		errs = append(errs, fmt.Errorf("%s.protocol is required", prefix))
	}
	if _, _, err := net.SplitHostPort(l.Address); err != nil {
		errs = append(errs, fmt.Errorf("%s.address %q: want host:port", prefix, l.Address))
	}
	if l.TLS != TLSImplicit && l.TLS != TLSStartTLS {
		errs = append(errs, fmt.Errorf("%s.tls %q: want %q or %q", prefix, l.TLS, TLSImplicit, TLSStartTLS))
	}
	if l.HandshakeTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.handshake_timeout %v: must not be negative", prefix, l.HandshakeTimeout))
	}
	if l.PublicPort < 0 || l.PublicPort > 65535 {
		errs = append(errs, fmt.Errorf("%s.public_port %d out of range", prefix, l.PublicPort))
	}
	switch cc := l.clientCertificates(); cc {
	case ClientCertNone, ClientCertRequest:
		if l.ClientCAFile != "" {
			errs = append(errs, fmt.Errorf("%s.client_ca_file: only with client_certificates: %s", prefix, ClientCertVerify))
		}
		if cc == ClientCertNone && l.RequireBoundTokens {
			errs = append(errs, fmt.Errorf("%s.require_bound_tokens: needs client_certificates: %s or %s", prefix, ClientCertRequest, ClientCertVerify))
		}
	case ClientCertVerify:
		if l.ClientCAFile == "" {
			errs = append(errs, fmt.Errorf("%s.client_ca_file is required with client_certificates: %s", prefix, ClientCertVerify))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.client_certificates %q: want %s, %s or %s", prefix, cc, ClientCertNone, ClientCertRequest, ClientCertVerify))
	}
	switch {
	case l.ProxyProtocol && len(l.ProxyTrustedNetworks) == 0:
		errs = append(errs, fmt.Errorf("%s.proxy_trusted_networks is required with proxy_protocol: true", prefix))
	case !l.ProxyProtocol && len(l.ProxyTrustedNetworks) > 0:
		errs = append(errs, fmt.Errorf("%s.proxy_trusted_networks: only used with proxy_protocol: true", prefix))
	}
	if _, err := l.trustedNetworks(); err != nil {
		errs = append(errs, fmt.Errorf("%s.%s", prefix, strings.TrimPrefix(err.Error(), "proxy: listener "+l.Name+": ")))
	}
	switch cb := l.channelBinding(); cb {
	case ChannelBindingOff, ChannelBindingOptional, ChannelBindingRequired:
	default:
		errs = append(errs, fmt.Errorf("%s.channel_binding %q: want %s, %s or %s", prefix, cb, ChannelBindingOff, ChannelBindingOptional, ChannelBindingRequired))
	}
	return errors.Join(errs...)
}

// ServerTLS returns a copy of base that asks for client certificates as the listener is
// configured, reading client_ca_file for ClientCertVerify.
func (l ListenerConfig) ServerTLS(base *tls.Config) (*tls.Config, error) {
	cfg := base.Clone()
	switch l.clientCertificates() {
	case ClientCertRequest:
		// RFC 8705 §6.2: the binding is to the key, not a chain; self-signed certificates
		// are fine, so nothing is verified here and Authorize compares the thumbprint.
		cfg.ClientAuth = tls.RequestClientCert
	case ClientCertVerify:
		pem, err := os.ReadFile(l.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("proxy: listener %s: client_ca_file: %w", l.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("proxy: listener %s: client_ca_file %s holds no PEM certificate", l.Name, l.ClientCAFile)
		}
		cfg.ClientAuth, cfg.ClientCAs = tls.VerifyClientCertIfGiven, pool
	default:
		cfg.ClientAuth = tls.NoClientCert
	}
	return cfg, nil
}

// Conn is what Authorize checks the credentials against: the client's connection.
type Conn struct {
	TLS    *tls.ConnectionState // nil before TLS
	Served *binding.Served      // the certificate this server presented (tls-server-end-point)
}

// bindingFailure is the status a failed channel binding gets. The seed draft
// draft-ietf-kitten-sasl-oauth-03 used "412"; RFC 7628 §3.2.2 statuses are OAuth error
// codes, and a binding that does not match this connection is a malformed request.
const bindingFailure = sasl.StatusInvalidRequest

// checkChannelBinding applies the listener's channel-binding policy to the GS2 flag.
func checkChannelBinding(l ListenerConfig, conn Conn, c sasl.Credentials) error {
	policy := l.channelBinding()
	if c.CBFlag != 'p' {
		// RFC 5801 §5: "n" (client does not support binding) and "y" (client supports it,
		// thinks the server does not). saslgate advertises no -PLUS mechanism, so "y" is no
		// downgrade; only a required policy turns them away.
		if policy == ChannelBindingRequired {
			return &sasl.Failure{Status: bindingFailure, Err: fmt.Errorf("proxy: channel binding required on this listener: send gs2 flag p=%s or p=%s with cbdata", binding.TLSExporter, binding.TLSServerEndPoint)}
		}
		return nil
	}
	if policy == ChannelBindingOff {
		return &sasl.Failure{Status: bindingFailure, Err: fmt.Errorf("proxy: channel binding %q requested but not enabled on this listener", c.CBType)}
	}
	if conn.TLS == nil {
		return &sasl.Failure{Status: bindingFailure, Err: fmt.Errorf("proxy: channel binding %q requested without TLS", c.CBType)}
	}
	var leaf *x509.Certificate
	if c.CBType == binding.TLSServerEndPoint {
		var err error
		if leaf, err = conn.Served.Leaf(); err != nil {
			return fmt.Errorf("proxy: tls-server-end-point: %w", err)
		}
	}
	want, err := binding.ServerData(*conn.TLS, leaf, c.CBType)
	if err != nil {
		return &sasl.Failure{Status: bindingFailure, Err: fmt.Errorf("proxy: channel binding: %w", err)}
	}
	if subtle.ConstantTimeCompare(c.CBData, want) != 1 {
		return &sasl.Failure{Status: bindingFailure, Err: fmt.Errorf("proxy: channel binding %s: cbdata does not match this connection", c.CBType)}
	}
	return nil
}

// checkBoundToken applies RFC 8705 §3 to a validated token: a token with cnf.x5t#S256
// is good only on a connection whose client certificate hashes to it.
func checkBoundToken(l ListenerConfig, conn Conn, id introspect.Identity) error {
	if id.CertThumbprint == "" {
		if l.RequireBoundTokens {
			return &sasl.Failure{Status: "invalid_token", Err: errors.New("proxy: token is not certificate-bound (no cnf.x5t#S256) and this listener requires bound tokens")}
		}
		return nil
	}
	if conn.TLS == nil || len(conn.TLS.PeerCertificates) == 0 {
		return &sasl.Failure{Status: "invalid_token", Err: errors.New("proxy: token is bound to a client certificate (cnf.x5t#S256), and the client sent none")}
	}
	got := binding.CertThumbprint(conn.TLS.PeerCertificates[0].Raw)
	if subtle.ConstantTimeCompare([]byte(got), []byte(id.CertThumbprint)) != 1 {
		return &sasl.Failure{Status: "invalid_token", Err: fmt.Errorf("proxy: token is bound to certificate %s, the client's is %s", id.CertThumbprint, got)}
	}
	return nil
}

// Authorize runs the protocol-independent checks of one SASL OAuth message and
// returns the validated identity. Failures the client caused are *sasl.Failure
// (sent as the RFC 7628 error challenge); anything else (errors.Is
// introspect.ErrTemporary) is a temporary failure. conn is the client's connection, for
// channel binding and certificate-bound tokens.
func Authorize(ctx context.Context, v Validator, l ListenerConfig, conn Conn, protocol string, c sasl.Credentials) (introspect.Identity, error) {
	// RFC 7628 §3.2: key/value pairs known to the server "MUST be validated to match".
	if c.Host != "" && l.PublicHost != "" && !strings.EqualFold(c.Host, l.PublicHost) {
		return introspect.Identity{}, &sasl.Failure{Status: "invalid_request", Err: fmt.Errorf("proxy: host=%q, listener serves %q", c.Host, l.PublicHost)}
	}
	if c.Port != 0 && l.PublicPort != 0 && c.Port != l.PublicPort {
		return introspect.Identity{}, &sasl.Failure{Status: "invalid_request", Err: fmt.Errorf("proxy: port=%d, listener serves %d", c.Port, l.PublicPort)}
	}
	// Before the IdP is asked: a token relayed from another connection with its cbdata
	// fails here.
	if err := checkChannelBinding(l, conn, c); err != nil {
		return introspect.Identity{}, err
	}
	id, err := v.Validate(ctx, introspect.Request{Token: c.Token, Protocol: protocol})
	if err != nil {
		var ie *introspect.Error
		switch {
		case errors.Is(err, introspect.ErrTemporary):
			return id, err
		case errors.As(err, &ie) && errors.Is(err, introspect.ErrInsufficientScope):
			return id, &sasl.Failure{Status: "insufficient_scope", Scope: ie.Scope, OpenIDConfiguration: ie.Discovery, Err: err}
		case errors.As(err, &ie):
			return id, &sasl.Failure{Status: "invalid_token", OpenIDConfiguration: ie.Discovery, Err: err}
		default:
			// Not a verdict on the token (cancelled, unexpected): never call it invalid.
			return id, err
		}
	}
	// The authorization identity (a= / user=) must be the token's user or absent:
	// saslgate never lets one user act as another.
	if c.AuthzID != "" && !strings.EqualFold(c.AuthzID, id.User) {
		return id, &sasl.Failure{Status: "invalid_token", Err: fmt.Errorf("proxy: authorization identity %q is not the token's user %q", c.AuthzID, id.User)}
	}
	if err := checkBoundToken(l, conn, id); err != nil {
		return id, err
	}
	return id, nil
}
