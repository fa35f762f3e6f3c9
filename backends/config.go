package backends

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// Login methods, the values of Config.Login.
const (
	LoginPlain           = "plain"
	LoginLogin           = "login"
	LoginMaster          = "master"
	LoginMasterSeparator = "master_separator"
	LoginXClient         = "xclient"
	LoginToken           = "token"
)

// Token mechanisms, the values of Config.TokenMechanism.
const (
	TokenOAuthBearer = "oauthbearer"
	TokenXOAuth2     = "xoauth2"
)

// DefaultMasterSeparator is Config.MasterSeparator when it is empty: Dovecot's usual
// auth_master_user_separator.
const DefaultMasterSeparator = "*"

// DefaultTimeout bounds dialing and logging in to a backend when Config.Timeout is zero.
const DefaultTimeout = 15 * time.Second

// Config describes one backend server.
type Config struct {
	// Address is the backend's host:port.
	Address string `yaml:"address"`
	// TLS is "none" (plain TCP, for a backend on loopback or a trusted network), "starttls" or
	// "implicit". Required: there is no default, so plain text is always a written choice.
	TLS string `yaml:"tls"`
	// ServerName is the name the backend's certificate must carry; default the host of Address.
	ServerName string `yaml:"server_name"`
	// CAFile is a PEM file of CA certificates trusted for the backend in addition to the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify accepts any certificate from the backend. The connection is still
	// encrypted, but the backend is no longer authenticated: anyone able to intercept the
	// connection can pose as the backend and collect every user's secret. Test setups only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Login is how saslgate logs in as the user. With the user's own secret: "plain" (IMAP
	// AUTHENTICATE PLAIN, SMTP AUTH PLAIN; the default) or "login" (the IMAP LOGIN command,
	// SMTP AUTH LOGIN). Without one, as a master user who may act as any user:
	// "master", SASL PLAIN with the user as authorization identity and MasterUser as
	// authentication identity (RFC 4616; Dovecot's master passdb, Cyrus's proxy
	// authorization), or "master_separator", IMAP LOGIN or SMTP AUTH PLAIN as
	// user+MasterSeparator+MasterUser (Dovecot's auth_master_user_separator), both with the
	// secret in MasterSecretFile. Or "token": the client's own access token, passed on with
	// TokenMechanism, for a backend that validates tokens itself (Dovecot's oauth2 passdb,
	// another saslgate); saslgate validates it and applies its policy first. Or, for a
	// Postfix SMTP backend only, "xclient": XCLIENT LOGIN=<user> without any secret. With
	// xclient the backend trusts saslgate to have authenticated the user; it must list
	// saslgate's address in smtpd_authorized_xclient_hosts and nobody else's.
	Login string `yaml:"login"`
	// TokenMechanism is the SASL mechanism of login "token": "oauthbearer" (RFC 7628, the
	// default) or "xoauth2".
	TokenMechanism string `yaml:"token_mechanism"`
	// MasterUser is the master user of logins "master" and "master_separator"; required with
	// them.
	MasterUser string `yaml:"master_user"`
	// MasterSecretFile holds the master user's password: one line, its line end not part of
	// it; under the rule of every secret file (internal/secretfile: mode 0600 or 0400, or a
	// root-owned 0640 read through saslgate's group). It is read at every backend login, so a
	// new secret applies to the next login without a restart. Required with logins "master"
	// and "master_separator". Whoever holds it can log in as any user of the backend.
	MasterSecretFile string `yaml:"master_secret_file"`
	// MasterSeparator joins the user and MasterUser with login "master_separator"; default
	// DefaultMasterSeparator. A user whose name contains it is never sent to the backend.
	MasterSeparator string `yaml:"master_separator"`
	// Hostname is the name saslgate gives in EHLO to an SMTP backend (RFC 5321 §4.1.1.1);
	// default the machine's host name. Not used for IMAP.
	Hostname string `yaml:"hostname"`
	// ForwardClientAddress tells the backend the client's address before logging in: to an
	// IMAP backend with Dovecot's ID fields x-originating-ip/-port and x-connected-ip/-port
	// (honoured from login_trusted_networks), to an SMTP backend with Postfix's XCLIENT ADDR=
	// and PORT= (when offered: saslgate must be in smtpd_authorized_xclient_hosts). The
	// backend then logs, rate-limits and records the real client rather than saslgate.
	ForwardClientAddress bool `yaml:"forward_client_address"`
	// Timeout bounds the dial, TLS handshake and login together; default DefaultTimeout.
	Timeout config.Duration `yaml:"timeout"`
}

// Client is the client connection a backend login is made for: what ForwardClientAddress
// forwards. The zero value forwards nothing.
type Client struct {
	// Addr is the client's address and port (the PROXY header's source behind a load balancer).
	Addr netip.AddrPort
	// Local is the address and port the client connected to.
	Local netip.AddrPort
}

// Validate reports every problem in the configuration, naming the field.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("backends: "+format, args...))
	}
	if c.Address == "" {
		add("address: required (host:port)")
	} else if host, port, err := net.SplitHostPort(c.Address); err != nil {
		add("address: %q is not host:port", c.Address)
	} else {
		if host == "" {
			add("address: %q has no host", c.Address)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			add("address: %q: port must be a number from 1 to 65535", c.Address)
		}
	}
	switch c.TLS {
	case "none", "starttls", "implicit":
	case "":
		add(`tls: required: "none", "starttls" or "implicit"`)
	default:
		add(`tls: %q is not "none", "starttls" or "implicit"`, c.TLS)
	}
	if c.TLS == "none" {
		if c.ServerName != "" {
			add(`server_name: only used with tls "starttls" or "implicit"`)
		}
		if c.CAFile != "" {
			add(`ca_file: only used with tls "starttls" or "implicit"`)
		}
		if c.InsecureSkipVerify {
			add(`insecure_skip_verify: only used with tls "starttls" or "implicit"`)
		}
	}
	if c.InsecureSkipVerify && c.CAFile != "" {
		add("insecure_skip_verify: set together with ca_file, which it would ignore")
	}
	switch c.Login {
	case "", LoginPlain, LoginLogin, LoginMaster, LoginMasterSeparator, LoginToken, LoginXClient:
	default:
		add(`login: %q is not "plain", "login", "master", "master_separator", "token" or "xclient"`, c.Login)
	}
	switch {
	case c.TokenMechanism == "":
	case c.Login != LoginToken:
		add(`token_mechanism: only used with login "token"`)
	case c.TokenMechanism != TokenOAuthBearer && c.TokenMechanism != TokenXOAuth2:
		add(`token_mechanism: %q is not "oauthbearer" or "xoauth2"`, c.TokenMechanism)
	}
	if c.usesMaster() {
		switch {
		case c.MasterUser == "":
			add("master_user: required with login %q", c.Login)
		case len(c.MasterUser) > maxUsernameLen || strings.ContainsFunc(c.MasterUser, isControl):
			add("master_user: %q has control characters or is longer than %d bytes", c.MasterUser, maxUsernameLen)
		case c.Login == LoginMasterSeparator && strings.Contains(c.MasterUser, c.separator()):
			add("master_user: %q contains master_separator %q", c.MasterUser, c.separator())
		}
		if c.MasterSecretFile == "" {
			add("master_secret_file: required with login %q", c.Login)
		}
	} else {
		if c.MasterUser != "" {
			add(`master_user: only used with login "master" or "master_separator"`)
		}
		if c.MasterSecretFile != "" {
			add(`master_secret_file: only used with login "master" or "master_separator"`)
		}
	}
	if c.MasterSeparator != "" {
		if c.Login != LoginMasterSeparator {
			add(`master_separator: only used with login "master_separator"`)
		}
		if strings.ContainsFunc(c.MasterSeparator, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			add("master_separator: %q is not printable ASCII without spaces", c.MasterSeparator)
		}
	}
	if c.Hostname != "" && !validHostname(c.Hostname) {
		add("hostname: %q is not a domain name or address literal", c.Hostname)
	}
	if c.Timeout < 0 {
		add("timeout: %v is negative", c.Timeout.D())
	}
	return errors.Join(errs...)
}

// NeedsUserSecret reports whether logging in needs the user's own backend secret (logins
// "plain" and "login"); the master logins, token and xclient do not, and a login pipeline
// does not look one up for them.
func (c Config) NeedsUserSecret() bool {
	switch c.Login {
	case LoginMaster, LoginMasterSeparator, LoginToken, LoginXClient:
		return false
	}
	return true
}

// PassesToken reports whether logging in sends the client's own access token (login
// "token"): a login pipeline then hands DialIMAP and DialSMTP the token as their secret.
func (c Config) PassesToken() bool { return c.Login == LoginToken }

// tokenMechanism is the SASL mechanism name login "token" sends.
func (c Config) tokenMechanism() string {
	if c.TokenMechanism == TokenXOAuth2 {
		return sasl.XOAuth2
	}
	return sasl.OAuthBearer
}

// usesMaster reports whether the login is as a master user.
func (c Config) usesMaster() bool {
	return c.Login == LoginMaster || c.Login == LoginMasterSeparator
}

// separator is MasterSeparator or its default.
func (c Config) separator() string { return cmp.Or(c.MasterSeparator, DefaultMasterSeparator) }

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// withDefaults fills in the defaulted fields of a valid configuration.
func (c Config) withDefaults() Config {
	if c.Login == "" {
		c.Login = LoginPlain
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if !validHostname(c.Hostname) {
			c.Hostname = "localhost"
		}
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	return c
}

// TLSConfig is the client TLS configuration the backend is dialled with: server_name (default
// the host of address), ca_file added to the system roots, insecure_skip_verify. The CA file is
// read on every call, so a rotated CA is picked up without a restart.
func (c Config) TLSConfig() (*tls.Config, error) {
	tc := &tls.Config{
		ServerName:         c.ServerName,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.InsecureSkipVerify,
	}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(c.Address)
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates found", c.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// validHostname reports whether h can be sent as the EHLO argument: a domain name or an address
// literal (RFC 5321 §4.1.3), checked loosely: printable ASCII without spaces, at most 255 bytes.
func validHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f {
			return false
		}
	}
	return true
}
