package introspect

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
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
	// DefaultTimeout bounds each request to an identity provider, including the wait for one
	// of its MaxConcurrentRequests slots.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxConcurrentRequests is how many requests saslgate has in flight towards one
	// identity provider at most.
	DefaultMaxConcurrentRequests = 16

	defaultDiscoveryPath = "/.well-known/openid-configuration"
	maxLeeway            = 5 * time.Minute
	configPrefix         = "tokens" // where cmd/saslgate mounts Config, for field names in errors

	modeJWT           = "jwt"
	modeIntrospection = "introspection"
	modeUserinfo      = "userinfo"

	clientSecretBasic = "client_secret_basic"
	clientSecretPost  = "client_secret_post"
)

// MailScope is the scope draft-ietf-mailmaint-oauth-public (§3.9) defines for access to a
// user's mail over IMAP, POP3, SMTP submission and JMAP: what a mail client following the
// draft asks for, so the natural required scope for those protocols (IssuerConfig.Scopes).
const MailScope = "urn:ietf:params:oauth:scope:mail"

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
	// Protocols are the protocol names Request.Protocol and IssuerConfig.Scopes may use: the
	// program's, not the file's (cmd/saslgate sets its protocol registry's). With them, a
	// scope key or a request naming another protocol is an error, so a misspelt name never
	// skips a scope check. Empty accepts any name.
	Protocols []string `yaml:"-"`
}

// IssuerConfig describes one trusted token issuer and the policy for its tokens.
//
// A token that is a JWS compact serialization (a JWT) goes to the issuer named by its "iss"
// claim, whatever that issuer's mode, and only to it. Any other (opaque) token is offered to the
// issuers in mode "introspection" or "userinfo", in config order, until one of them knows it:
// so each of those issuers is shown the others' opaque tokens, and several should be configured
// only for providers trusted alike.
type IssuerConfig struct {
	// Issuer is the exact "iss" value of its tokens and of its discovery document.
	Issuer string `yaml:"issuer"`
	// DiscoveryURL is where the issuer's metadata is read: its OpenID Connect discovery
	// document, or its RFC 8414 authorization server metadata. It defaults to
	// Issuer + "/.well-known/openid-configuration".
	DiscoveryURL string `yaml:"discovery_url"`
	// Mode is how tokens are checked. "jwt" (the default) verifies JWT access tokens locally
	// with the issuer's published signing keys (RFC 9068). "introspection" asks the issuer's
	// RFC 7662 introspection endpoint about every token, so a revoked token stops working
	// within cache.ttl. "userinfo" presents every token to the issuer's OpenID Connect
	// userinfo endpoint (OIDC Core §5.3), for providers whose opaque tokens cannot be checked
	// any other way; see UserinfoEndpoint for what that mode gives up.
	Mode string `yaml:"mode"`
	// IntrospectionEndpoint is the RFC 7662 endpoint for mode "introspection". It defaults to
	// the "introspection_endpoint" of the discovery document.
	IntrospectionEndpoint string `yaml:"introspection_endpoint"`
	// ClientID identifies saslgate to the introspection endpoint (mode "introspection" only,
	// required there).
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds ClientID's secret, surrounding white space ignored. It must not be
	// accessible by group or others (mode 0600 or 0400), and is read once, at start.
	ClientSecretFile string `yaml:"client_secret_file"`
	// ClientAuth is how the secret is sent to the introspection endpoint: "client_secret_basic"
	// (the default: an HTTP Basic Authorization header, RFC 6749 §2.3.1) or
	// "client_secret_post" (client_id and client_secret form parameters).
	ClientAuth string `yaml:"client_auth"`
	// UserinfoEndpoint is the endpoint for mode "userinfo". It defaults to the
	// "userinfo_endpoint" of the discovery document. A userinfo answer only says that the
	// provider still accepts the token: it names no audience, so any token of the provider,
	// issued to any client, is accepted (mode "userinfo" therefore requires
	// InsecureSkipAudienceCheck); it has no expiry, so a result is reused for cache.ttl even if
	// the token expires or is revoked sooner; and it has scopes only if the provider adds a
	// "scope" member, so Scopes fail otherwise.
	UserinfoEndpoint string `yaml:"userinfo_endpoint"`
	// Audience lists accepted audiences, for every protocol: a token's "aud" must contain one
	// of them, or one of the protocol's Resources.
	Audience []string `yaml:"audience"`
	// Resources maps a protocol, by its name in Config.Protocols, to this gateway's protected
	// resource identifiers for it: the RFC 8707 resource indicators a client names when it
	// asks the issuer for a token, such as "https://mail.example.com" (https URLs without query
	// or fragment, RFC 9728 §1.2; draft-ietf-mailmaint-oauth-public derives them from the mail
	// server's host name). A token whose "aud" contains one of a protocol's resources is
	// accepted for that protocol; a token whose "aud" names only resources of other protocols
	// is refused, as a token for another resource must be (RFC 8707 §2). Values are compared
	// exactly, as strings. The HTTP listener serves RFC 9728 metadata for each of them.
	Resources map[string][]string `yaml:"resources"`
	// InsecureSkipAudienceCheck accepts tokens whatever their "aud". It gives up the guarantee
	// that a token was minted for saslgate: any token of the issuer for any client or API works.
	InsecureSkipAudienceCheck bool `yaml:"insecure_skip_audience_check"`
	// AllowedClientIDs, when set, accepts only tokens issued to one of these clients: their
	// "client_id" (or, without one, "azp") must be listed. It applies to JWTs and to
	// introspection and userinfo answers alike; a token naming no client is refused. Without
	// it, and without AllowAnyClientID, tokens of every client are accepted, as before either
	// existed; set one of the two to make that choice explicit.
	AllowedClientIDs []string `yaml:"allowed_client_ids"`
	// AllowAnyClientID accepts tokens issued to any client, including clients that registered
	// themselves with the issuer (RFC 7591 dynamic client registration, as
	// draft-ietf-mailmaint-oauth-public has mail clients do), on the strength of their scopes
	// alone: it requires Scopes, and on a protocol with no required scopes it refuses every
	// token of the issuer. It cannot be set together with AllowedClientIDs. It gives up
	// knowing which applications read mail: any application a user signs in to at the issuer
	// and grants the scopes can, so the issuer's consent screen and registration policy
	// become the gate.
	AllowAnyClientID bool `yaml:"allow_any_client_id"`
	// Algorithms lists accepted JWS "alg" values (default DefaultAlgorithms). Mode "jwt" only.
	Algorithms []string `yaml:"algorithms"`
	// RequireATJWT requires the RFC 9068 header typ "at+jwt" (or "application/at+jwt") and the
	// RFC 9068 §2.2 required claims sub, client_id, iat and jti. Mode "jwt" only.
	RequireATJWT bool `yaml:"require_at_jwt"`
	// Leeway is the allowed clock skew for "exp" and "nbf" (default 30s, at most 5m).
	Leeway config.Duration `yaml:"leeway"`
	// UsernameClaim names the string claim that holds the mailbox username (default "email").
	// In mode "introspection" it is a member of the introspection response, such as RFC 7662's
	// "username" or "sub"; in mode "userinfo", a member of the userinfo response.
	UsernameClaim string `yaml:"username_claim"`
	// Username normalises the claim value.
	Username UsernameConfig `yaml:"username"`
	// Scopes maps a protocol, by its name in Config.Protocols, to the scopes a token must all
	// carry to use it.
	// They are read from "scope" (and, in JWTs, "scp"); a token without them lacks them.
	Scopes map[string][]string `yaml:"scopes"`
	// Timeout bounds each request to the issuer, including the wait for a free request slot
	// (default 10s). An issuer that does not answer in time is a temporary failure.
	Timeout config.Duration `yaml:"timeout"`
	// MaxConcurrentRequests bounds the requests in flight towards the issuer (default 16);
	// further validations wait for a slot, at most Timeout.
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
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
// Results are keyed by a SHA-256 hash of the token, never the token itself. For issuers in mode
// "introspection" or "userinfo", TTL is also how long a revoked token may keep working.
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

// RequiredScopes are the scopes the issuer's tokens must carry for one protocol or another,
// each once, by protocol name and then as configured: what a client should ask for.
func (c IssuerConfig) RequiredScopes() []string {
	var out []string
	for _, proto := range slices.Sorted(maps.Keys(c.Scopes)) {
		for _, s := range c.Scopes[proto] {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// quotedChoice lists names for an error message: "a", "b" or "c".
func quotedChoice(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// withDefaults returns the issuer config with zero values replaced by defaults.
func (c IssuerConfig) withDefaults() IssuerConfig {
	if c.DiscoveryURL == "" && c.Issuer != "" {
		c.DiscoveryURL = strings.TrimSuffix(c.Issuer, "/") + defaultDiscoveryPath
	}
	if c.Mode == "" {
		c.Mode = modeJWT
	}
	if c.Mode == modeIntrospection && c.ClientAuth == "" {
		c.ClientAuth = clientSecretBasic
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(DefaultTimeout)
	}
	if c.MaxConcurrentRequests == 0 {
		c.MaxConcurrentRequests = DefaultMaxConcurrentRequests
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
		raw := ic
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
		// Keys of another mode are errors, not ignored: an admin who sets them expects an effect.
		onlyFor := func(mode, name string, set bool) {
			if set && ic.Mode != mode {
				bad(f(name), "only used with mode %q", mode)
			}
		}
		switch ic.Mode {
		case modeJWT:
		case modeIntrospection:
			if ic.ClientID == "" {
				bad(f("client_id"), "required with mode %q", modeIntrospection)
			}
			if ic.ClientSecretFile == "" {
				bad(f("client_secret_file"), "required with mode %q (RFC 7662 §2.1: the endpoint must authenticate its callers)", modeIntrospection)
			}
			if ic.ClientAuth != clientSecretBasic && ic.ClientAuth != clientSecretPost {
				bad(f("client_auth"), "unknown method %q (want %q or %q)", ic.ClientAuth, clientSecretBasic, clientSecretPost)
			}
		case modeUserinfo:
			if !ic.InsecureSkipAudienceCheck {
				bad(f("insecure_skip_audience_check"), "must be true with mode %q: a userinfo answer names no audience, so tokens issued to any client are accepted", modeUserinfo)
			}
			if len(ic.Audience) > 0 {
				bad(f("audience"), "cannot be checked with mode %q (a userinfo answer names no audience)", modeUserinfo)
			}
			if len(ic.Resources) > 0 {
				bad(f("resources"), "cannot be checked with mode %q (a userinfo answer names no audience)", modeUserinfo)
			}
		default:
			bad(f("mode"), "unknown mode %q (want %q, %q or %q)", ic.Mode, modeJWT, modeIntrospection, modeUserinfo)
		}
		onlyFor(modeIntrospection, "introspection_endpoint", ic.IntrospectionEndpoint != "")
		onlyFor(modeIntrospection, "client_id", ic.ClientID != "")
		onlyFor(modeIntrospection, "client_secret_file", ic.ClientSecretFile != "")
		onlyFor(modeIntrospection, "client_auth", raw.ClientAuth != "")
		onlyFor(modeUserinfo, "userinfo_endpoint", ic.UserinfoEndpoint != "")
		onlyFor(modeJWT, "algorithms", len(raw.Algorithms) > 0)
		onlyFor(modeJWT, "require_at_jwt", ic.RequireATJWT)
		for _, e := range [...]struct{ name, url string }{
			{"introspection_endpoint", ic.IntrospectionEndpoint},
			{"userinfo_endpoint", ic.UserinfoEndpoint},
		} {
			if e.url != "" {
				if err := checkURL(e.url); err != nil {
					bad(f(e.name), "%v", err)
				}
			}
		}
		if len(ic.Audience) == 0 && len(ic.Resources) == 0 && !ic.InsecureSkipAudienceCheck && ic.Mode != modeUserinfo {
			bad(f("audience"), "required (or resources, or set insecure_skip_audience_check)")
		}
		for j, a := range ic.Audience {
			if a == "" {
				bad(fmt.Sprintf("issuers[%d].audience[%d]", i, j), "empty")
			}
		}
		if len(ic.Resources) > 0 && ic.InsecureSkipAudienceCheck && ic.Mode != modeUserinfo {
			bad(f("resources"), "has no effect with insecure_skip_audience_check (every audience is accepted)")
		}
		for _, proto := range slices.Sorted(maps.Keys(ic.Resources)) {
			if len(c.Protocols) > 0 && !slices.Contains(c.Protocols, proto) {
				bad(f("resources"), "unknown protocol %q (want %s)", proto, quotedChoice(c.Protocols))
			}
			for j, r := range ic.Resources[proto] {
				if err := checkResource(r); err != nil {
					bad(fmt.Sprintf("issuers[%d].resources.%s[%d]", i, proto, j), "%v", err)
				}
			}
		}
		for j, c := range ic.AllowedClientIDs {
			if c == "" {
				bad(fmt.Sprintf("issuers[%d].allowed_client_ids[%d]", i, j), "empty")
			}
		}
		if ic.AllowAnyClientID {
			if len(ic.AllowedClientIDs) > 0 {
				bad(f("allow_any_client_id"), "conflicts with allowed_client_ids: set one or the other")
			}
			if !slices.ContainsFunc(slices.Collect(maps.Values(ic.Scopes)), func(s []string) bool { return len(s) > 0 }) {
				bad(f("scopes"), "required with allow_any_client_id: a token of any client counts only through its scopes (e.g. %s for every mail protocol)", MailScope)
			}
		}
		if ic.Timeout < 0 {
			bad(f("timeout"), "must not be negative")
		}
		if ic.MaxConcurrentRequests < 0 {
			bad(f("max_concurrent_requests"), "must not be negative")
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
			if len(c.Protocols) > 0 && !slices.Contains(c.Protocols, proto) {
				bad(f("scopes"), "unknown protocol %q (want %s)", proto, quotedChoice(c.Protocols))
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

// checkResource accepts a protected resource identifier: an absolute https URL without
// user information, query or fragment (RFC 9728 §1.2; RFC 8707 §2 "SHOULD NOT include a query").
func checkResource(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %v", err)
	case u.Scheme != "https" || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q: want an https URL like https://mail.example.com", s)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Errorf("%q: must not have user information, a query or a fragment", s)
	}
	return nil
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
