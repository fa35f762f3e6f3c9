package introspect

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

func TestConfigValidate(t *testing.T) {
	good := func() IssuerConfig {
		return IssuerConfig{Issuer: "https://idp.example.com", Audience: []string{"saslgate"}}
	}
	introspection := func() IssuerConfig {
		return IssuerConfig{Issuer: "https://idp.example.com", Mode: "introspection", Audience: []string{"saslgate"},
			ClientID: "saslgate", ClientSecretFile: "/etc/saslgate/idp-client-secret"}
	}
	userinfo := func() IssuerConfig {
		return IssuerConfig{Issuer: "https://idp.example.com", Mode: "userinfo", InsecureSkipAudienceCheck: true}
	}
	tests := []struct {
		name string
		cfg  func(c *Config)
		want []string // substrings, all present; none: valid
	}{
		{name: "minimal"},
		{name: "loopback http", cfg: func(c *Config) { c.Issuers[0].Issuer = "http://127.0.0.1:9980" }},
		{name: "no issuers", cfg: func(c *Config) { c.Issuers = nil }, want: []string{"tokens.issuers: at least one"}},
		{name: "issuer missing", cfg: func(c *Config) { c.Issuers[0].Issuer = "" }, want: []string{"tokens.issuers[0].issuer: required"}},
		{name: "remote http", cfg: func(c *Config) { c.Issuers[0].Issuer = "http://idp.example.com" },
			want: []string{"tokens.issuers[0].issuer", "loopback"}},
		{name: "relative issuer", cfg: func(c *Config) { c.Issuers[0].Issuer = "idp.example.com" },
			want: []string{"tokens.issuers[0].issuer", "absolute"}},
		{name: "issuer with query", cfg: func(c *Config) { c.Issuers[0].Issuer = "https://idp.example.com/?tenant=1" },
			want: []string{"tokens.issuers[0].issuer: must not have a query"}},
		{name: "bad discovery url", cfg: func(c *Config) { c.Issuers[0].DiscoveryURL = "ftp://idp.example.com/x" },
			want: []string{"tokens.issuers[0].discovery_url"}},
		{name: "duplicate issuer", cfg: func(c *Config) { c.Issuers = append(c.Issuers, c.Issuers[0]) },
			want: []string{"tokens.issuers[1].issuer: duplicate of issuers[0]"}},
		{name: "introspection", cfg: func(c *Config) { c.Issuers[0] = introspection() }},
		{name: "introspection, client_secret_post", cfg: func(c *Config) {
			c.Issuers[0] = introspection()
			c.Issuers[0].ClientAuth = "client_secret_post"
		}},
		{name: "introspection without client", cfg: func(c *Config) { c.Issuers[0].Mode = "introspection" },
			want: []string{"tokens.issuers[0].client_id: required", "tokens.issuers[0].client_secret_file: required"}},
		{name: "introspection, bad client_auth", cfg: func(c *Config) {
			c.Issuers[0] = introspection()
			c.Issuers[0].ClientAuth = "private_key_jwt"
		}, want: []string{`tokens.issuers[0].client_auth: unknown method "private_key_jwt"`}},
		{name: "introspection endpoint over remote http", cfg: func(c *Config) {
			c.Issuers[0] = introspection()
			c.Issuers[0].IntrospectionEndpoint = "http://idp.example.com/introspect"
		}, want: []string{"tokens.issuers[0].introspection_endpoint", "loopback"}},
		{name: "introspection with JWT keys", cfg: func(c *Config) {
			c.Issuers[0] = introspection()
			c.Issuers[0].Algorithms, c.Issuers[0].RequireATJWT = []string{"RS256"}, true
			c.Issuers[0].UserinfoEndpoint = "https://idp.example.com/userinfo"
		}, want: []string{`tokens.issuers[0].algorithms: only used with mode "jwt"`, `tokens.issuers[0].require_at_jwt: only used with mode "jwt"`,
			`tokens.issuers[0].userinfo_endpoint: only used with mode "userinfo"`}},
		{name: "userinfo", cfg: func(c *Config) { c.Issuers[0] = userinfo() }},
		{name: "userinfo without the audience waiver", cfg: func(c *Config) {
			c.Issuers[0] = userinfo()
			c.Issuers[0].InsecureSkipAudienceCheck = false
		}, want: []string{"tokens.issuers[0].insecure_skip_audience_check: must be true with mode \"userinfo\""}},
		{name: "userinfo with audience", cfg: func(c *Config) {
			c.Issuers[0] = userinfo()
			c.Issuers[0].Audience = []string{"saslgate"}
		}, want: []string{"tokens.issuers[0].audience: cannot be checked"}},
		{name: "userinfo with client credentials", cfg: func(c *Config) {
			c.Issuers[0] = userinfo()
			c.Issuers[0].ClientID, c.Issuers[0].ClientSecretFile, c.Issuers[0].ClientAuth = "x", "/s", "client_secret_basic"
			c.Issuers[0].IntrospectionEndpoint = "https://idp.example.com/introspect"
		}, want: []string{"tokens.issuers[0].client_id: only used", "tokens.issuers[0].client_secret_file: only used",
			"tokens.issuers[0].client_auth: only used", "tokens.issuers[0].introspection_endpoint: only used"}},
		{name: "jwt with client credentials", cfg: func(c *Config) { c.Issuers[0].ClientID = "saslgate" },
			want: []string{`tokens.issuers[0].client_id: only used with mode "introspection"`}},
		{name: "mode unknown", cfg: func(c *Config) { c.Issuers[0].Mode = "saml" }, want: []string{"tokens.issuers[0].mode: unknown"}},
		{name: "allowed client ids", cfg: func(c *Config) { c.Issuers[0].AllowedClientIDs = []string{"thunderbird", ""} },
			want: []string{"tokens.issuers[0].allowed_client_ids[1]: empty"}},
		{name: "resources", cfg: func(c *Config) {
			c.Issuers[0].Resources = map[string][]string{"imap": {"https://mail.example.com", "https://imap.example.com:993/imap"}}
		}},
		{name: "resources instead of audience", cfg: func(c *Config) {
			c.Issuers[0].Audience, c.Issuers[0].Resources = nil, map[string][]string{"smtp": {"https://mail.example.com"}}
		}},
		{name: "bad resources", cfg: func(c *Config) {
			c.Issuers[0].Resources = map[string][]string{
				"imaps": {"https://mail.example.com"},
				"imap":  {"", "http://mail.example.com", "mail.example.com", "https://mail.example.com/?a=b", "https://mail.example.com/#top", "https://u@mail.example.com", "urn:example:mail"},
			}
		}, want: []string{`tokens.issuers[0].resources: unknown protocol "imaps" (want "imap" or "smtp")`,
			"tokens.issuers[0].resources.imap[0]: \"\": want an https URL", "tokens.issuers[0].resources.imap[1]", "tokens.issuers[0].resources.imap[2]",
			"tokens.issuers[0].resources.imap[3]: \"https://mail.example.com/?a=b\": must not have", "tokens.issuers[0].resources.imap[4]",
			"tokens.issuers[0].resources.imap[5]", "tokens.issuers[0].resources.imap[6]"}},
		{name: "resources with the audience check skipped", cfg: func(c *Config) {
			c.Issuers[0].InsecureSkipAudienceCheck = true
			c.Issuers[0].Resources = map[string][]string{"imap": {"https://mail.example.com"}}
		}, want: []string{"tokens.issuers[0].resources: has no effect with insecure_skip_audience_check"}},
		{name: "userinfo with resources", cfg: func(c *Config) {
			c.Issuers[0] = userinfo()
			c.Issuers[0].Resources = map[string][]string{"imap": {"https://mail.example.com"}}
		}, want: []string{`tokens.issuers[0].resources: cannot be checked with mode "userinfo"`}},
		{name: "any client id", cfg: func(c *Config) {
			c.Issuers[0].AllowAnyClientID, c.Issuers[0].Scopes = true, map[string][]string{"imap": {MailScope}}
		}},
		{name: "any client id without scopes", cfg: func(c *Config) {
			c.Issuers[0].AllowAnyClientID, c.Issuers[0].Scopes = true, map[string][]string{"imap": {}}
		}, want: []string{"tokens.issuers[0].scopes: required with allow_any_client_id", MailScope}},
		{name: "any client id and allowed client ids", cfg: func(c *Config) {
			c.Issuers[0].AllowAnyClientID, c.Issuers[0].Scopes = true, map[string][]string{"imap": {MailScope}}
			c.Issuers[0].AllowedClientIDs = []string{"thunderbird"}
		}, want: []string{"tokens.issuers[0].allow_any_client_id: conflicts with allowed_client_ids"}},
		{name: "limits", cfg: func(c *Config) {
			c.Issuers[0].Timeout, c.Issuers[0].MaxConcurrentRequests = config.Duration(-time.Second), -1
		}, want: []string{"tokens.issuers[0].timeout", "tokens.issuers[0].max_concurrent_requests"}},
		{name: "audience missing", cfg: func(c *Config) { c.Issuers[0].Audience = nil },
			want: []string{"tokens.issuers[0].audience: required (or resources, or set insecure_skip_audience_check)"}},
		{name: "audience skipped", cfg: func(c *Config) { c.Issuers[0].Audience, c.Issuers[0].InsecureSkipAudienceCheck = nil, true }},
		{name: "audience empty string", cfg: func(c *Config) { c.Issuers[0].Audience = []string{""} },
			want: []string{"tokens.issuers[0].audience[0]: empty"}},
		{name: "algorithms", cfg: func(c *Config) { c.Issuers[0].Algorithms = []string{"RS256", "none", "HS256", "hs512", "RS1"} },
			want: []string{"algorithms[1]: \"none\"", "algorithms[2]: \"HS256\": HMAC", "algorithms[3]: \"hs512\": HMAC", "algorithms[4]: unsupported"}},
		{name: "negative leeway", cfg: func(c *Config) { c.Issuers[0].Leeway = config.Duration(-time.Second) },
			want: []string{"tokens.issuers[0].leeway"}},
		{name: "huge leeway", cfg: func(c *Config) { c.Issuers[0].Leeway = config.Duration(time.Hour) },
			want: []string{"tokens.issuers[0].leeway"}},
		{name: "domains", cfg: func(c *Config) {
			c.Issuers[0].Username = UsernameConfig{AppendDomain: "@example.com", AllowedDomains: []string{"ok.example", "bad domain", ""}}
		}, want: []string{"username.append_domain", "username.allowed_domains[1]", "username.allowed_domains[2]: empty"}},
		{name: "scopes", cfg: func(c *Config) {
			c.Issuers[0].Scopes = map[string][]string{"imaps": {"email"}, "smtp": {"a b", ""}}
		}, want: []string{`tokens.issuers[0].scopes: unknown protocol "imaps"`, "scopes.smtp[0]", "scopes.smtp[1]"}},
		{name: "ca and insecure", cfg: func(c *Config) { c.Issuers[0].CAFile, c.Issuers[0].InsecureSkipVerify = "/ca.pem", true },
			want: []string{"tokens.issuers[0].ca_file: conflicts"}},
		{name: "cache", cfg: func(c *Config) {
			c.Cache = CacheConfig{TTL: config.Duration(-1), NegativeTTL: config.Duration(-1), Size: -1}
		}, want: []string{"tokens.cache.ttl", "tokens.cache.negative_ttl", "tokens.cache.size"}},
		{name: "every problem reported", cfg: func(c *Config) {
			c.Issuers = append(c.Issuers, IssuerConfig{Issuer: "http://idp.example.net"})
			c.Cache.Size = -1
		}, want: []string{"tokens.issuers[1].issuer", "tokens.issuers[1].audience", "tokens.cache.size"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Issuers: []IssuerConfig{good()}, Protocols: testProtocols}
			if tt.cfg != nil {
				tt.cfg(&c)
			}
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestIssuerDefaults(t *testing.T) {
	ic := IssuerConfig{Issuer: "https://idp.example.com/realms/mail/"}.withDefaults()
	if ic.DiscoveryURL != "https://idp.example.com/realms/mail/.well-known/openid-configuration" ||
		ic.Mode != "jwt" || ic.Leeway.D() != DefaultLeeway || ic.UsernameClaim != "email" || len(ic.Algorithms) != len(DefaultAlgorithms) ||
		ic.Timeout.D() != DefaultTimeout || ic.MaxConcurrentRequests != DefaultMaxConcurrentRequests || ic.ClientAuth != "" {
		t.Errorf("defaults: %+v", ic)
	}
	if ic := (IssuerConfig{Mode: "introspection"}).withDefaults(); ic.ClientAuth != "client_secret_basic" {
		t.Errorf("introspection client_auth default = %q", ic.ClientAuth)
	}
}

// Scope keys are the program's protocol names (Config.Protocols); without them any name goes.
func TestConfigProtocols(t *testing.T) {
	ic := IssuerConfig{Issuer: "https://idp.example.com", Audience: []string{"saslgate"},
		Scopes: map[string][]string{"smtp": {"mail", "send"}, "imap": {"email", "mail"}, "sieve": {"sieve"}}}
	err := Config{Issuers: []IssuerConfig{ic}, Protocols: testProtocols}.Validate()
	if want := `tokens.issuers[0].scopes: unknown protocol "sieve" (want "imap" or "smtp")`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	if err := (Config{Issuers: []IssuerConfig{ic}}).Validate(); err != nil {
		t.Errorf("without Protocols: %v", err)
	}
	if got, want := ic.RequiredScopes(), []string{"email", "mail", "sieve", "send"}; !slices.Equal(got, want) {
		t.Errorf("RequiredScopes = %q, want %q", got, want)
	}
}
