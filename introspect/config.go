package introspect

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// Defaults applied by New to zero config values.
const (
	DefaultLeeway        = 30 * time.Second
	DefaultUsernameClaim = "email"
	DefaultCacheTTL      = 5 * time.Minute
	DefaultCacheNegative = 10 * time.Second
	DefaultCacheSize     = 10000
	defaultDiscoveryPath = "/.well-known/openid-configuration"
	maxLeeway            = 5 * time.Minute
	modeJWT              = "jwt"
	configPrefix         = "tokens" // where cmd/saslgate mounts Config, for field names in errors
	protocolIMAP         = "imap"
	protocolSMTP         = "smtp"
)

// DefaultAlgorithms are the JWS algorithms accepted when IssuerConfig.Algorithms is empty: every
// asymmetric algorithm go-oidc supports. HMAC (HS*) and "none" are never accepted.
var DefaultAlgorithms = []string{
	"RS256", "RS384", "RS512",
	"ES256", "ES384", "ES512",
	"PS256", "PS384", "PS512",
	"EdDSA",
}

// Config is the token validation configuration (the "tokens" section of the config file).
type Config struct {
	Issuers []IssuerConfig `yaml:"issuers"`
	Cache   CacheConfig    `yaml:"cache"`
}

// IssuerConfig describes one trusted token issuer and the policy for its tokens.
type IssuerConfig struct {
	// Issuer is the exact "iss" value of its tokens and of its discovery document.
	Issuer string `yaml:"issuer"`
	// DiscoveryURL defaults to Issuer + "/.well-known/openid-configuration".
	DiscoveryURL string `yaml:"discovery_url"`
	// Mode is "jwt" (the default and, for now, the only mode).
	Mode string `yaml:"mode"`
	// Audience lists accepted audiences: a token's "aud" must contain one of them.
	Audience []string `yaml:"audience"`
	// InsecureSkipAudienceCheck accepts tokens whatever their "aud". It gives up the guarantee
	// that a token was minted for saslgate: any token of the issuer for any client or API works.
	InsecureSkipAudienceCheck bool `yaml:"insecure_skip_audience_check"`
	// Algorithms lists accepted JWS "alg" values (default DefaultAlgorithms).
	Algorithms []string `yaml:"algorithms"`
	// RequireATJWT requires the RFC 9068 header typ "at+jwt" (or "application/at+jwt") and the
	// RFC 9068 §2.2 required claims sub, client_id, iat and jti.
	RequireATJWT bool `yaml:"require_at_jwt"`
	// Leeway is the allowed clock skew for "exp" and "nbf" (default 30s, at most 5m).
	Leeway config.Duration `yaml:"leeway"`
	// UsernameClaim names the string claim that holds the mailbox username (default "email").
	UsernameClaim string `yaml:"username_claim"`
	// Username normalises the claim value.
	Username UsernameConfig `yaml:"username"`
	// Scopes maps a protocol ("imap", "smtp") to the scopes a token must all carry to use it.
	Scopes map[string][]string `yaml:"scopes"`
	// CAFile is a PEM bundle of CAs trusted for the issuer's HTTPS endpoints (default: system).
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify disables TLS certificate checks towards the issuer: whoever can
	// intercept that traffic can serve their own signing keys and mint tokens for any user.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// UsernameConfig turns a claim value into a mailbox username. The steps run in this order:
// Lowercase, then AllowedDomains (checked on the claim's domain), StripDomain, AppendDomain.
type UsernameConfig struct {
	// Lowercase maps ASCII A-Z to a-z. Other letters are left alone: Unicode case mapping
	// folds distinct identities together (U+212A KELVIN SIGN lowercases to "k").
	Lowercase bool `yaml:"lowercase"`
	// StripDomain removes "@domain" from the value.
	StripDomain bool `yaml:"strip_domain"`
	// AppendDomain is appended as "@domain" to a value without a domain.
	AppendDomain string `yaml:"append_domain"`
	// AllowedDomains, when set, rejects values whose domain (after the last "@", compared
	// ASCII-case-insensitively) is not listed, and values without a domain.
	AllowedDomains []string `yaml:"allowed_domains"`
}

// CacheConfig sizes the validation result cache. Valid tokens are cached until the earlier of
// their expiry and TTL; invalid ones for NegativeTTL; temporary failures are never cached.
type CacheConfig struct {
	// Disabled turns the cache off: every login is validated afresh.
	Disabled bool `yaml:"disabled"`
	// TTL bounds how long a valid token's result is reused (default 5m).
	TTL config.Duration `yaml:"ttl"`
	// NegativeTTL is how long a rejection is reused (default 10s).
	NegativeTTL config.Duration `yaml:"negative_ttl"`
	// Size is the maximum number of cached results (default 10000).
	Size int `yaml:"size"`
}

// withDefaults returns the issuer config with zero values replaced by defaults.
func (c IssuerConfig) withDefaults() IssuerConfig {
	if c.DiscoveryURL == "" && c.Issuer != "" {
		c.DiscoveryURL = strings.TrimSuffix(c.Issuer, "/") + defaultDiscoveryPath
	}
	if c.Mode == "" {
		c.Mode = modeJWT
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = DefaultAlgorithms
	}
	if c.Leeway == 0 {
		c.Leeway = config.Duration(DefaultLeeway)
	}
	if c.UsernameClaim == "" {
		c.UsernameClaim = DefaultUsernameClaim
	}
	return c
}

// Validate reports every problem in the configuration, each naming its field
// (e.g. "tokens.issuers[0].audience").
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", configPrefix, field, fmt.Sprintf(format, args...)))
	}
	if len(c.Issuers) == 0 {
		bad("issuers", "at least one issuer is required")
	}
	seen := map[string]int{}
	for i, ic := range c.Issuers {
		f := func(name string) string { return fmt.Sprintf("issuers[%d].%s", i, name) }
		ic = ic.withDefaults()
		if ic.Issuer == "" {
			bad(f("issuer"), "required")
		} else {
			if err := checkURL(ic.Issuer); err != nil {
				bad(f("issuer"), "%v", err)
			} else if u, _ := url.Parse(ic.Issuer); u.RawQuery != "" || u.Fragment != "" {
				bad(f("issuer"), "must not have a query or fragment (RFC 8414 §2)")
			}
			if j, dup := seen[ic.Issuer]; dup {
				bad(f("issuer"), "duplicate of issuers[%d]", j)
			}
			seen[ic.Issuer] = i
		}
		if ic.DiscoveryURL != "" {
			if err := checkURL(ic.DiscoveryURL); err != nil {
				bad(f("discovery_url"), "%v", err)
			}
		}
		switch ic.Mode {
		case modeJWT:
		case "introspection", "userinfo":
			bad(f("mode"), "%q is not supported yet (only \"jwt\")", ic.Mode)
		default:
			bad(f("mode"), "unknown mode %q (want \"jwt\")", ic.Mode)
		}
		if len(ic.Audience) == 0 && !ic.InsecureSkipAudienceCheck {
			bad(f("audience"), "required (or set insecure_skip_audience_check)")
		}
		for j, a := range ic.Audience {
			if a == "" {
				bad(fmt.Sprintf("issuers[%d].audience[%d]", i, j), "empty")
			}
		}
		for j, a := range ic.Algorithms {
			field := fmt.Sprintf("issuers[%d].algorithms[%d]", i, j)
			switch {
			case strings.EqualFold(a, "none"):
				bad(field, "\"none\" is never accepted")
			case strings.HasPrefix(strings.ToUpper(a), "HS"):
				bad(field, "%q: HMAC algorithms are never accepted (the key would have to be shared)", a)
			case !supportedAlg(a):
				bad(field, "unsupported algorithm %q (supported: %s)", a, strings.Join(DefaultAlgorithms, ", "))
			}
		}
		if l := ic.Leeway.D(); l < 0 || l > maxLeeway {
			bad(f("leeway"), "must be between 0s and %v", maxLeeway)
		}
		u := ic.Username
		if d := u.AppendDomain; d != "" {
			if err := checkDomain(d); err != nil {
				bad(f("username.append_domain"), "%v", err)
			}
		}
		for j, d := range u.AllowedDomains {
			if err := checkDomain(d); err != nil {
				bad(fmt.Sprintf("issuers[%d].username.allowed_domains[%d]", i, j), "%v", err)
			}
		}
		for _, proto := range slices.Sorted(maps.Keys(ic.Scopes)) {
			scopes := ic.Scopes[proto]
			if proto != protocolIMAP && proto != protocolSMTP {
				bad(f("scopes"), "unknown protocol %q (want %q or %q)", proto, protocolIMAP, protocolSMTP)
			}
			for j, s := range scopes {
				if !validScopeToken(s) {
					bad(fmt.Sprintf("issuers[%d].scopes.%s[%d]", i, proto, j), "invalid scope %q (RFC 6749 §3.3)", s)
				}
			}
		}
		if ic.CAFile != "" && ic.InsecureSkipVerify {
			bad(f("ca_file"), "conflicts with insecure_skip_verify")
		}
	}
	if c.Cache.TTL < 0 {
		bad("cache.ttl", "must not be negative")
	}
	if c.Cache.NegativeTTL < 0 {
		bad("cache.negative_ttl", "must not be negative")
	}
	if c.Cache.Size < 0 {
		bad("cache.size", "must not be negative")
	}
	return errors.Join(errs...)
}

func supportedAlg(a string) bool {
	for _, s := range DefaultAlgorithms {
		if a == s {
			return true
		}
	}
	return false
}

// checkURL accepts absolute https URLs, and http ones only on loopback (tests and the demo):
// plain http to a remote issuer would let anyone on the path replace its signing keys.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: http is only allowed for loopback hosts, use https", s)
	default:
		return fmt.Errorf("%q: scheme must be https", s)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty")
	}
	if strings.Contains(d, "@") {
		return fmt.Errorf("%q: a domain without \"@\"", d)
	}
	return ValidUsername(d)
}

// validScopeToken reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x21 || b == '"' || b == '\\' || b > 0x7e {
			return false
		}
	}
	return true
}
