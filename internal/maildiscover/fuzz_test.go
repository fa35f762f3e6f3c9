package maildiscover

import (
	"strings"
	"testing"

	"github.com/saslgate/saslgate/internal/probe"
)

// draftSample is the example of draft-ietf-mailmaint-autoconfig ("XML config file"), cut to
// its server and oAuth2 parts.
const draftSample = `<?xml version="1.0"?>
<clientConfig version="1.2">
  <emailProvider id="example.com">
    <domain>example.com</domain>
    <domain>example.net</domain>
    <displayName>Google Workspace</displayName>
    <displayShortName>GMail</displayShortName>
    <incomingServer type="imap">
      <hostname>imap.example.com</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop.example.com</hostname>
      <port>995</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.googlemail.com</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
    <incomingServer type="jmap">
      <url>https://jmap.example.com</url>
      <authentication>OAuth2</authentication>
      <authentication>basic</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
  </emailProvider>
  <oAuth2>
    <authURL>https://login.example.com/auth</authURL>
    <tokenURL>https://login.example.com/token</tokenURL>
    <issuer>login.example.com</issuer>
    <scope>IMAP POP3 SMTP CalDAV CardDAV WebDAV offline_access</scope>
    <clientID>open</clientID>
    <clientSecret>give-me-your-password</clientSecret>
  </oAuth2>
  <clientConfigUpdate url="https://www.example.com/config/mail.xml" />
</clientConfig>`

// gatewaySample is what saslgate's own autoconfig handler (proxy/discovery) serves.
const gatewaySample = `<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.com">
    <domain>example.com</domain>
    <displayName>Example Mail</displayName>
    <displayShortName>Example Mail</displayShortName>
    <incomingServer type="imap">
      <hostname>mail.example.com</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <authentication>OAuth2</authentication>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>mail.example.com</hostname>
      <port>143</port>
      <socketType>STARTTLS</socketType>
      <authentication>OAuth2</authentication>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>mail.example.com</hostname>
      <port>465</port>
      <socketType>SSL</socketType>
      <authentication>OAuth</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
  <setupServer type="managesieve">
    <hostname>mail.example.com</hostname>
    <port>4190</port>
    <socketType>STARTTLS</socketType>
    <authentication>OAuth2</authentication>
    <username>%EMAILADDRESS%</username>
  </setupServer>
  <oAuth2>
    <issuer>https://id.example.com/realms/mail</issuer>
    <scope>openid offline_access email</scope>
    <authURL>https://id.example.com/realms/mail/auth</authURL>
    <tokenURL>https://id.example.com/realms/mail/token</tokenURL>
  </oAuth2>
</clientConfig>`

func FuzzParseAutoconfig(f *testing.F) {
	for _, s := range []string{draftSample, gatewaySample, `<clientConfig/>`, `<other/>`, `<clientConfig><emailProvider><incomingServer type="IMAP"><hostname>a</hostname><port>0993</port><socketType>ssl</socketType><authentication>oauth2</authentication><username>%EMAILDOMAIN%\%EMAILLOCALPART%</username></incomingServer></emailProvider></clientConfig>`} {
		f.Add([]byte(s), "alice@example.com")
	}
	f.Fuzz(func(t *testing.T, body []byte, address string) {
		ac, err := ParseAutoconfig(body, address)
		if err != nil {
			return
		}
		for _, s := range ac.Servers {
			if !validHost(s.Host) || s.Port < 1 || s.Port > 65535 || strings.ContainsAny(s.Username, "\x00\r\n") {
				t.Fatalf("accepted server %+v", s)
			}
			switch s.TLS {
			case probe.TLSImplicit, probe.TLSStartTLS, probe.TLSNone:
			default:
				t.Fatalf("server %+v: tls %q", s, s.TLS)
			}
			if back, err := ParseServerURL(s.URL()); err != nil || back.Type != s.Type || back.Port != s.Port || back.TLS != s.TLS {
				t.Fatalf("server %+v: URL %s reads back as %+v, %v", s, s.URL(), back, err)
			}
		}
	})
}

// webfingerSeeds: the JRD of RFC 7033 §3.1's OpenID Connect example and saslgate's answer.
var webfingerSeeds = []string{
	`{"subject":"acct:carol@example.com","links":[{"rel":"http://openid.net/specs/connect/1.0/issuer","href":"https://openid.example.com"}]}`,
	`{"subject":"acct:alice@example.com","links":[{"rel":"http://openid.net/specs/connect/1.0/issuer","href":"https://id.example.com/realms/mail"}]}`,
	`{"subject":"acct:bob@example.com","aliases":["https://www.example.com/~bob/"],"properties":{"http://example.com/ns/role":"employee"},"links":[{"rel":"http://webfinger.example/rel/profile-page","href":"https://www.example.com/~bob/"}]}`,
	`{"links":[]}`, `{"links":null}`, `[]`,
}

func FuzzParseWebFinger(f *testing.F) {
	for _, s := range webfingerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		href, err := ParseWebFinger(body)
		if err != nil && href != "" {
			t.Fatalf("href %q with error %v", href, err)
		}
		if href != "" && CheckIssuer(href, false) == nil && !strings.HasPrefix(strings.ToLower(href), "https://") {
			t.Fatalf("issuer %q accepted without https", href)
		}
	})
}

// resourceSeeds: the metadata example of RFC 9728 §3.2 and saslgate's document.
var resourceSeeds = []string{
	`{"resource":"https://resource.example.com","authorization_servers":["https://as1.example.com","https://as2.example.net"],"bearer_methods_supported":["header","body"],"scopes_supported":["profile","email","phone"],"resource_documentation":"https://resource.example.com/resource_documentation.html"}`,
	`{"resource":"https://mail.example.com","authorization_servers":["https://id.example.com/realms/mail"],"scopes_supported":["email"],"resource_name":"Example Mail","tls_client_certificate_bound_access_tokens":false}`,
	`{"resource":"https://mail.example.com/","authorization_servers":[]}`, `{}`, `null`,
}

func FuzzParseResourceMetadata(f *testing.F) {
	for _, s := range resourceSeeds {
		f.Add([]byte(s), "https://mail.example.com")
	}
	f.Fuzz(func(t *testing.T, body []byte, resource string) {
		m, err := ParseResourceMetadata(body, resource)
		if err == nil && m.Resource != resource {
			t.Fatalf("metadata for %q accepted for %q", m.Resource, resource)
		}
	})
}

// challengeSeeds: RFC 7628 §4.3's and §4.4's error challenges, and saslgate's.
var challengeSeeds = []string{
	`{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}`,
	`{"status":"invalid_token","schemes":"bearer","scope":"example_scope"}`,
	`{"status":"insufficient_scope","scope":"email","openid-configuration":"https://id.example.com/realms/mail/.well-known/openid-configuration"}`,
	`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`, `"x"`,
}

func FuzzParseChallenge(f *testing.F) {
	for _, s := range challengeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseChallenge(b)
		if err == nil && c == nil {
			t.Fatal("nil challenge without error")
		}
	})
}
