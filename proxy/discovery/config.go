package discovery

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Config is the "http" section of the configuration file: the listener for client
// auto-configuration. The section is optional; without an address nothing listens.
type Config struct {
	// Address is the host:port to listen on, e.g. "0.0.0.0:443" or, behind a TLS-terminating
	// load balancer, "0.0.0.0:8080".
	Address string `yaml:"address"`
	// TLS serves HTTPS with the certificate of the "tls" section. WebFinger must be reached
	// over HTTPS (RFC 7033 §4) and Thunderbird fetches autoconfig over HTTPS first: without
	// TLS here, something in front must terminate it.
	TLS bool `yaml:"tls"`
	// Domains are the mail domains served: the autoconfig document's domains, and the only
	// domains of acct: URIs WebFinger answers for. Required with Address.
	Domains []string `yaml:"domains"`
	// DisplayName is the provider name shown by mail clients (default the first domain).
	DisplayName string `yaml:"display_name"`
	// Scope is the OAuth scope clients should ask for, announced in the autoconfig document
	// (default "openid offline_access" plus every scope the issuer requires for any protocol).
	Scope string `yaml:"scope"`
	// Resource is this gateway's protected resource identifier for every protocol, an https
	// URL (RFC 9728 §1.2), e.g. "https://mail.example.com". With it, RFC 9728 protected
	// resource metadata is served at /.well-known/oauth-protected-resource (with the URL's
	// path appended, §3.1), whatever the request's Host. Its authorization servers are the
	// issuers whose audience or resources list it, or every issuer when none does. The
	// resources of single protocols are the issuers' (tokens.issuers[].resources), each served
	// the same way.
	Resource string `yaml:"resource"`
	// PublicClientIDs are, by issuer (its tokens.issuers[].issuer), the client ID of a public
	// client the issuer has registered for any mail client to use, published as the
	// autoconfig document's clientID (draft-ietf-mailmaint-autoconfig, "OAuth2 requirements":
	// the issuer must accept that client ID without a secret). Without one, no clientID is
	// published and mail clients register themselves (RFC 7591) where the issuer lets them.
	// A client ID is public; never put a secret here.
	PublicClientIDs map[string]string `yaml:"public_client_ids"`
}

// Enabled reports whether the HTTP listener is configured.
func (c Config) Enabled() bool { return c.Address != "" }

// Validate reports every problem, each naming its field ("http.domains").
func (c Config) Validate() error {
	if !c.Enabled() {
		if len(c.Domains) > 0 || c.TLS || c.DisplayName != "" || c.Scope != "" || c.Resource != "" || len(c.PublicClientIDs) > 0 {
			return errors.New("http.address: required when other http settings are given")
		}
		return nil
	}
	var errs []error
	if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("http.address %q: want host:port", c.Address))
	}
	if len(c.Domains) == 0 {
		errs = append(errs, errors.New("http.domains: at least one mail domain is required"))
	}
	for i, d := range c.Domains {
		if d == "" || strings.ContainsAny(d, "@/:?# \t\r\n") || strings.Trim(d, ".") != d {
			errs = append(errs, fmt.Errorf("http.domains[%d] %q: want a domain name like example.com", i, d))
		}
	}
	if c.Resource != "" {
		// RFC 9728 §1.2: an https URL with no fragment (and, preferably, no query).
		if u, err := url.Parse(c.Resource); err != nil || u.Scheme != "https" || u.Host == "" || u.Fragment != "" || u.RawQuery != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("http.resource %q: want an https URL without query or fragment, like https://mail.example.com", c.Resource))
		}
	}
	for _, issuer := range slices.Sorted(maps.Keys(c.PublicClientIDs)) {
		// RFC 6749 Appendix A.1: client-id = *VSCHAR; an empty one is no client ID.
		id := c.PublicClientIDs[issuer]
		if id == "" || strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			errs = append(errs, fmt.Errorf("http.public_client_ids[%q]: %q is not a client ID (printable ASCII, RFC 6749 Appendix A.1)", issuer, id))
		}
	}
	for _, s := range strings.Fields(c.Scope) {
		for _, r := range s {
			if r < 0x21 || r == '"' || r == '\\' || r > 0x7e {
				errs = append(errs, fmt.Errorf("http.scope: %q is not a scope token (RFC 6749 §3.3)", s))
				break
			}
		}
	}
	return errors.Join(errs...)
}
