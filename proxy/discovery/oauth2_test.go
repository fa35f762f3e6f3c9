package discovery

import (
	"context"
	"encoding/xml"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/internal/idpmeta"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

// registry stands for cmd/saslgate's four front ends, as discovery reads them.
var registry = []proxy.Protocol{
	{Name: "imap", Autoconfig: proxy.AutoconfigIncoming},
	{Name: "pop3", Autoconfig: proxy.AutoconfigIncoming},
	{Name: "sieve"},
	{Name: "smtp", Autoconfig: proxy.AutoconfigOutgoing},
}

// endpoints is a MetadataFunc for issuers that all answer.
func endpoints(ctx context.Context, is introspect.IssuerConfig) (*idpmeta.Metadata, error) {
	return &idpmeta.Metadata{Issuer: is.Issuer, AuthorizationEndpoint: is.Issuer + "/auth", TokenEndpoint: is.Issuer + "/token",
		RegistrationEndpoint: is.Issuer + "/register"}, nil
}

// autoconfigDoc is what a mail client reads of the document.
type autoconfigDoc struct {
	Provider struct {
		Incoming []struct {
			Type string `xml:"type,attr"`
			Port int    `xml:"port"`
			Auth string `xml:"authentication"`
		} `xml:"incomingServer"`
		Outgoing []struct {
			Type string `xml:"type,attr"`
			Port int    `xml:"port"`
			Auth string `xml:"authentication"`
		} `xml:"outgoingServer"`
	} `xml:"emailProvider"`
	OAuth2 []struct {
		Issuer   string `xml:"issuer"`
		Scope    string `xml:"scope"`
		AuthURL  string `xml:"authURL"`
		TokenURL string `xml:"tokenURL"`
		ClientID string `xml:"clientID"`
	} `xml:"oAuth2"`
}

func readAutoconfig(t *testing.T, h *Handler, addr string) (autoconfigDoc, string) {
	t.Helper()
	res := get(t, h, AutoconfigPath+"?emailaddress="+url.QueryEscape(addr))
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("autoconfig for %s: %s\n%s", addr, res.Status, body)
	}
	var doc autoconfigDoc
	if err := xml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return doc, string(body)
}

// draft-ietf-mailmaint-autoconfig's oAuth2 element: one per document, for the issuer of the
// address's domain, naming the issuer, the scopes every announced protocol needs, the issuer's
// endpoints, and a client ID only where the site publishes one; every protocol the program
// serves and the format has a type for is announced with OAuth2 authentication.
func TestAutoconfigOAuth2(t *testing.T) {
	const (
		orgIssuer = "https://login.example.org"
		mail      = introspect.MailScope
	)
	issuers := []introspect.IssuerConfig{
		{Issuer: issuer, Scopes: map[string][]string{"imap": {mail}, "pop3": {mail}, "smtp": {mail, "submit"}},
			Username: introspect.UsernameConfig{AllowedDomains: []string{"example.com"}}},
		{Issuer: orgIssuer, AllowedClientIDs: []string{"mail-public", "webmail"},
			Username: introspect.UsernameConfig{AllowedDomains: []string{"example.org"}}},
	}
	listeners := []proxy.ListenerConfig{
		{Name: "imaps", Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"},
		{Name: "pop3s", Protocol: "pop3", Address: ":995", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"},
		{Name: "sieve", Protocol: "sieve", Address: ":4190", TLS: proxy.TLSStartTLS, PublicHost: "mail.example.com"},
		{Name: "submission", Protocol: "smtp", Address: ":587", TLS: proxy.TLSStartTLS, PublicHost: "mail.example.com"},
	}
	cfg := Config{Address: ":443", Domains: []string{"example.com", "example.org"},
		PublicClientIDs: map[string]string{orgIssuer: "mail-public"}}
	h, err := New(cfg, listeners, registry, issuers, endpoints, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr                             string
		issuer, scope, authURL, clientID string // clientID "": no clientID element
	}{
		// The issuer identifier has a path: it goes out whole, not as its host.
		{"alice@example.com", issuer, "openid offline_access " + mail + " submit", issuer + "/auth", ""},
		// No path: the bare host of the draft's sample. The published client ID.
		{"bob@example.org", "login.example.org", "openid offline_access", orgIssuer + "/auth", "mail-public"},
	}
	for _, tc := range cases {
		doc, body := readAutoconfig(t, h, tc.addr)
		var in, out []string
		for _, s := range doc.Provider.Incoming {
			in = append(in, s.Type+":"+s.Auth)
		}
		for _, s := range doc.Provider.Outgoing {
			out = append(out, s.Type+":"+s.Auth)
		}
		if !slices.Equal(in, []string{"imap:OAuth2", "pop3:OAuth2"}) || !slices.Equal(out, []string{"smtp:OAuth2"}) {
			t.Errorf("%s: servers in %v out %v, want imap and pop3 in, smtp out, all OAuth2", tc.addr, in, out)
		}
		if len(doc.OAuth2) != 1 {
			t.Fatalf("%s: %d oAuth2 elements, want 1:\n%s", tc.addr, len(doc.OAuth2), body)
		}
		o := doc.OAuth2[0]
		if o.Issuer != tc.issuer || o.Scope != tc.scope || o.AuthURL != tc.authURL || o.TokenURL != strings.TrimSuffix(tc.authURL, "/auth")+"/token" || o.ClientID != tc.clientID {
			t.Errorf("%s: oAuth2 %+v, want issuer %q scope %q authURL %q clientID %q", tc.addr, o, tc.issuer, tc.scope, tc.authURL, tc.clientID)
		}
		if got := strings.Contains(body, "<clientID>"); got != (tc.clientID != "") || tc.clientID != "" && !strings.Contains(body, "<clientID>"+tc.clientID+"</clientID>") {
			t.Errorf("%s: clientID, want %q:\n%s", tc.addr, tc.clientID, body)
		}
		if strings.Contains(body, "clientSecret") {
			t.Errorf("%s: a clientSecret is published:\n%s", tc.addr, body)
		}
	}
}

func TestAutoconfigIssuer(t *testing.T) {
	for issuer, want := range map[string]string{
		"https://idp.example.com":             "idp.example.com",
		"https://idp.example.com:8443":        "idp.example.com:8443",
		"http://127.0.0.1:9980":               "127.0.0.1:9980",
		"https://idp.example.com/":            "https://idp.example.com/",
		"https://idp.example.com/realms/mail": "https://idp.example.com/realms/mail",
		"https://login.example.com/tenant/v2": "https://login.example.com/tenant/v2",
	} {
		if got := autoconfigIssuer(issuer); got != want {
			t.Errorf("autoconfigIssuer(%q) = %q, want %q", issuer, got, want)
		}
	}
}

func TestPublicClientIDs(t *testing.T) {
	listeners := []proxy.ListenerConfig{{Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"}}
	issuers := []introspect.IssuerConfig{{Issuer: issuer, AllowedClientIDs: []string{"thunderbird"}}}
	cases := []struct {
		name string
		ids  map[string]string
		want string // "": accepted
	}{
		{"listed client", map[string]string{issuer: "thunderbird"}, ""},
		{"not a configured issuer", map[string]string{"https://idp.example.net": "thunderbird"},
			`http.public_client_ids["https://idp.example.net"]: not an issuer of tokens.issuers`},
		{"refused by allowed_client_ids", map[string]string{issuer: "mail-public"},
			`http.public_client_ids["https://idp.example.com/realms/mail"]: "mail-public" is not in tokens.issuers[0].allowed_client_ids`},
		{"empty", map[string]string{issuer: ""}, `http.public_client_ids["https://idp.example.com/realms/mail"]: "" is not a client ID`},
		{"control byte", map[string]string{issuer: "a\nb"}, `is not a client ID`},
	}
	for _, tc := range cases {
		_, err := New(Config{Address: ":443", Domains: []string{"example.com"}, PublicClientIDs: tc.ids}, listeners, protocols, issuers, nil, nil)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := (Config{PublicClientIDs: map[string]string{issuer: "x"}}).Validate(); err == nil || !strings.Contains(err.Error(), "http.address") {
		t.Errorf("public_client_ids without address: %v", err)
	}
}
