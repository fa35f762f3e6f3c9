package introspect

import (
	"context"
	"net/http"
	"testing"
)

// Tokens a mail client got for itself, as draft-ietf-mailmaint-oauth-public has it: issued to a
// client that registered itself (RFC 7591), for this gateway's resource indicator (RFC 8707),
// with the draft's mail scope. The policy accepts them only where the configuration says so, in
// every mode that sees "aud" and "client_id", and a refusal still names the issuer's discovery
// document for the RFC 7628 §3.2.2 error challenge.
func TestResourceAndClientPolicy(t *testing.T) {
	const (
		imapResource  = "https://imap.example.com"
		smtpResource  = "https://smtp.example.com"
		mailResource  = "https://mail.example.com"
		otherResource = "https://calendar.example.com"
		registered    = "dcr-7f3a9c" // a client_id the issuer handed out by dynamic registration
	)
	jwtIdP, opaque := newTestIdP(t), newOpaqueIdP(t)
	clk := newClock()
	now := clk.Now()
	type claims = map[string]any
	modes := []struct {
		name   string
		issuer func() IssuerConfig
		client *http.Client
		claims func() claims
		issue  func(claims) string
	}{
		{"jwt", func() IssuerConfig { return baseConfig(jwtIdP).Issuers[0] }, jwtIdP.srv.Client(),
			func() claims { return jwtIdP.claims(now) },
			func(c claims) string { return jwtIdP.sign(t, tokenSpec{}, c) }},
		{"introspection", func() IssuerConfig { return opaque.introspectionIssuer(t) }, opaque.srv.Client(),
			func() claims { return opaque.active(now) },
			opaque.issue},
	}
	// Per protocol: its resources, as an admin with one host per protocol and one shared host
	// would write them.
	resources := map[string][]string{"imap": {imapResource, mailResource}, "smtp": {smtpResource, mailResource}}
	mailScopes := map[string][]string{"imap": {MailScope}, "smtp": {MailScope, "smtp"}}
	tests := []struct {
		name   string
		cfg    func(ic *IssuerConfig, c *Config)
		claims func(c claims)
		proto  string // default "imap"
		kind   error  // nil: accepted
		reason string
	}{
		// (a) RFC 8707: "aud" is the resource the client asked for.
		{name: "aud is the protocol's resource",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { c["aud"] = imapResource }},
		{name: "aud is a resource shared by both protocols, used for smtp", proto: "smtp",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { c["aud"] = mailResource; c["scope"] = "email smtp" }},
		{name: "aud lists another resource and this one",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { c["aud"] = []string{otherResource, imapResource} }},
		{name: "resources without any audience value",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Audience, ic.Resources = nil, resources },
			claims: func(c claims) { c["aud"] = imapResource }},
		{name: "the audience value still works beside resources",
			cfg: func(ic *IssuerConfig, _ *Config) { ic.Resources = resources }},
		{name: "aud is the resource URL, but no resources configured",
			claims: func(c claims) { c["aud"] = imapResource },
			kind:   ErrInvalidToken, reason: "audience mismatch"},
		{name: "aud is the resource URL with a trailing slash",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { c["aud"] = imapResource + "/" },
			kind:   ErrInvalidToken, reason: "audience mismatch"},
		{name: "aud is another resource",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { c["aud"] = otherResource },
			kind:   ErrInvalidToken, reason: "audience mismatch"},
		{name: "aud is the resource of another protocol",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { c["aud"] = smtpResource },
			kind:   ErrInvalidToken, reason: `token is for resource "https://smtp.example.com" of smtp, not imap`},
		{name: "aud is the resource of another protocol, without any audience value",
			cfg:    func(ic *IssuerConfig, _ *Config) { ic.Audience, ic.Resources = nil, resources },
			claims: func(c claims) { c["aud"] = []string{smtpResource, otherResource} },
			kind:   ErrInvalidToken, reason: "of smtp, not imap"},
		{name: "no aud", cfg: func(ic *IssuerConfig, _ *Config) { ic.Resources = resources },
			claims: func(c claims) { delete(c, "aud") },
			kind:   ErrInvalidToken, reason: "audience mismatch"},

		// (b) Any client, by its scopes.
		{name: "any client: registered client with the mail scope",
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.AllowAnyClientID, ic.Scopes, ic.Resources = true, mailScopes, resources
			},
			claims: func(c claims) { c["client_id"], c["aud"], c["scope"] = registered, imapResource, "openid "+MailScope }},
		{name: "any client: registered client without the mail scope",
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.AllowAnyClientID, ic.Scopes, ic.Resources = true, mailScopes, resources
			},
			claims: func(c claims) { c["client_id"], c["aud"], c["scope"] = registered, imapResource, "openid email" },
			kind:   ErrInsufficientScope, reason: `scope "urn:ietf:params:oauth:scope:mail" missing for imap`},
		{name: "any client: registered client with one of smtp's two scopes", proto: "smtp",
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.AllowAnyClientID, ic.Scopes, ic.Resources = true, mailScopes, resources
			},
			claims: func(c claims) { c["client_id"], c["aud"], c["scope"] = registered, smtpResource, MailScope },
			kind:   ErrInsufficientScope, reason: `scope "smtp" missing for smtp`},
		{name: "any client: a protocol that requires no scope refuses every token",
			cfg: func(ic *IssuerConfig, c *Config) {
				c.Protocols = []string{"imap", "pop3", "smtp"}
				ic.AllowAnyClientID, ic.Scopes = true, mailScopes
			},
			proto:  "pop3",
			claims: func(c claims) { c["client_id"], c["scope"] = registered, MailScope },
			kind:   ErrInvalidToken, reason: `allow_any_client_id, but no scope is required for "pop3"`},
		{name: "no client policy: a registered client is accepted, as before",
			claims: func(c claims) { c["client_id"] = registered }},

		// allowed_client_ids is unchanged.
		{name: "allowed_client_ids: listed client",
			cfg: func(ic *IssuerConfig, _ *Config) { ic.AllowedClientIDs = []string{"thunderbird"} }},
		{name: "allowed_client_ids: registered client with the mail scope is still refused",
			cfg: func(ic *IssuerConfig, _ *Config) {
				ic.AllowedClientIDs, ic.Scopes = []string{"thunderbird"}, mailScopes
			},
			claims: func(c claims) { c["client_id"], c["scope"] = registered, MailScope },
			kind:   ErrInvalidToken, reason: `client "dcr-7f3a9c" not allowed`},
	}
	for _, m := range modes {
		for _, tt := range tests {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				ic := m.issuer()
				cfg := Config{Issuers: []IssuerConfig{ic}, Cache: CacheConfig{Disabled: true}, Protocols: testProtocols}
				if tt.cfg != nil {
					tt.cfg(&cfg.Issuers[0], &cfg)
				}
				v, _ := newValidator(t, clk, cfg, WithHTTPClient(m.client))
				c := m.claims()
				if tt.claims != nil {
					tt.claims(c)
				}
				proto := cmp(tt.proto, "imap")
				id, err := v.Validate(context.Background(), Request{Token: m.issue(c), Protocol: proto})
				e := checkErr(t, err, tt.kind, tt.reason)
				if e != nil {
					// What the RFC 7628 §3.2.2 challenge carries as "openid-configuration".
					if want := cfg.Issuers[0].withDefaults().DiscoveryURL; e.Discovery != want {
						t.Errorf("Discovery = %q, want %q", e.Discovery, want)
					}
					return
				}
				if id.User != "alice@example.com" || id.ClientID != c["client_id"] {
					t.Errorf("Identity = %+v", id)
				}
			})
		}
	}
}
