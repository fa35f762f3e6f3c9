package maildiscover

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/saslgate/saslgate/internal/probe"
)

// maxDocument bounds every fetched document.
const maxDocument = 1 << 20

// IssuerRel is the WebFinger link relation of OpenID Connect Discovery 1.0 §2.
const IssuerRel = "http://openid.net/specs/connect/1.0/issuer"

// Autoconfig server types (draft-ietf-mailmaint-autoconfig "type") saslgate's tools know.
const (
	TypeIMAP        = "imap"
	TypePOP3        = "pop3"
	TypeSMTP        = "smtp"
	TypeManageSieve = "managesieve"
)

// Server is one mail server of an account.
type Server struct {
	Type     string // TypeIMAP, TypePOP3, TypeSMTP or TypeManageSieve
	Host     string
	Port     int
	TLS      string // probe.TLSImplicit, probe.TLSStartTLS or probe.TLSNone
	Username string // with the autoconfig placeholders replaced; "" when not said
}

// Address is host:port.
func (s Server) Address() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL is the server as `saslgate probe` and --server write it: imaps://host:993,
// submission://host:587, sieve://host:4190 …
func (s Server) URL() string {
	for _, u := range serverURLs {
		if u.typ == s.Type && u.tls == s.TLS {
			return u.scheme + "://" + s.Address()
		}
	}
	return s.Type + "://" + s.Address()
}

// Target is the server as probe.Run dials it.
func (s Server) Target() probe.Target {
	p := map[string]string{TypeIMAP: probe.IMAP, TypePOP3: probe.POP3, TypeSMTP: probe.SMTP, TypeManageSieve: probe.Sieve}[s.Type]
	return probe.Target{Protocol: p, TLS: s.TLS, Address: s.Address()}
}

// serverURLs map a server's type and TLS mode to the URL scheme probe.ParseURL reads back.
var serverURLs = []struct{ typ, tls, scheme string }{
	{TypeIMAP, probe.TLSImplicit, "imaps"},
	{TypeIMAP, probe.TLSStartTLS, "imap+starttls"},
	{TypeIMAP, probe.TLSNone, "imap"},
	{TypePOP3, probe.TLSImplicit, "pop3s"},
	{TypePOP3, probe.TLSStartTLS, "pop3+stls"},
	{TypePOP3, probe.TLSNone, "pop3"},
	{TypeSMTP, probe.TLSImplicit, "submissions"},
	{TypeSMTP, probe.TLSStartTLS, "submission"},
	{TypeSMTP, probe.TLSNone, "smtp"},
	{TypeManageSieve, probe.TLSImplicit, "sieve+implicit"},
	{TypeManageSieve, probe.TLSStartTLS, "sieve"},
	{TypeManageSieve, probe.TLSNone, "sieve+plaintext"},
}

// ParseServerURL reads a server given as a URL (probe.ParseURL's schemes: imaps://host:993,
// submissions://host:465, …).
func ParseServerURL(s string) (Server, error) {
	t, err := probe.ParseURL(s)
	if err != nil {
		return Server{}, err
	}
	host, port, _ := net.SplitHostPort(t.Address)
	n, _ := strconv.Atoi(port)
	typ := map[string]string{probe.IMAP: TypeIMAP, probe.POP3: TypePOP3, probe.SMTP: TypeSMTP, probe.Sieve: TypeManageSieve}[t.Protocol]
	return Server{Type: typ, Host: host, Port: n, TLS: t.TLS}, nil
}

// Autoconfig is what saslgate uses of an autoconfig document.
type Autoconfig struct {
	Domains []string
	// Servers are the incoming and outgoing servers (and setup servers: ManageSieve) of the
	// types above that offer OAuth authentication, in the document's order of preference.
	Servers []Server
	// Others counts the servers left out: other types, other authentication, bad values.
	Others int
	OAuth2 *OAuth2 // nil without an oAuth2 element
}

// OAuth2 is the autoconfig document's oAuth2 element, as written (Issuer may be a bare host
// name: the draft's sample has one).
type OAuth2 struct {
	Issuer       string
	Scope        string
	AuthURL      string
	TokenURL     string
	ClientID     string
	ClientSecret string
}

type xmlServer struct {
	Type           string   `xml:"type,attr"`
	Hostname       string   `xml:"hostname"`
	Port           string   `xml:"port"`
	SocketType     string   `xml:"socketType"`
	Authentication []string `xml:"authentication"`
	Username       string   `xml:"username"`
}

type xmlConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Provider struct {
		Domains  []string    `xml:"domain"`
		Incoming []xmlServer `xml:"incomingServer"`
		Outgoing []xmlServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
	// The draft's registry puts ManageSieve in a setupServer element beside emailProvider.
	Setup  []xmlServer `xml:"setupServer"`
	OAuth2 *struct {
		Issuer       string `xml:"issuer"`
		Scope        string `xml:"scope"`
		AuthURL      string `xml:"authURL"`
		TokenURL     string `xml:"tokenURL"`
		ClientID     string `xml:"clientID"`
		ClientSecret string `xml:"clientSecret"`
	} `xml:"oAuth2"`
}

// ParseAutoconfig reads a config-v1.1.xml document for address (which fills the
// %EMAILADDRESS%, %EMAILLOCALPART% and %EMAILDOMAIN% placeholders of usernames). Unknown
// elements, server types and authentication methods are skipped, as the draft's "XML
// validation" section requires; a document that is not XML, or not a clientConfig, is an
// error.
func ParseAutoconfig(body []byte, address string) (*Autoconfig, error) {
	if len(body) > maxDocument {
		return nil, errors.New("maildiscover: autoconfig document too large")
	}
	var doc xmlConfig
	if err := xml.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("maildiscover: autoconfig document: %v", err)
	}
	ac := &Autoconfig{}
	for _, d := range doc.Provider.Domains {
		if d = strings.TrimSpace(d); d != "" {
			ac.Domains = append(ac.Domains, d)
		}
	}
	local, domain, _ := strings.Cut(address, "@")
	placeholders := strings.NewReplacer("%EMAILADDRESS%", address, "%EMAILLOCALPART%", local, "%EMAILDOMAIN%", domain)
	for _, list := range [][]xmlServer{doc.Provider.Incoming, doc.Provider.Outgoing, doc.Setup} {
		for _, x := range list {
			s, ok := x.server(placeholders)
			if !ok {
				ac.Others++
				continue
			}
			ac.Servers = append(ac.Servers, s)
		}
	}
	if o := doc.OAuth2; o != nil {
		ac.OAuth2 = &OAuth2{
			Issuer: strings.TrimSpace(o.Issuer), Scope: strings.Join(strings.Fields(o.Scope), " "),
			AuthURL: strings.TrimSpace(o.AuthURL), TokenURL: strings.TrimSpace(o.TokenURL),
			ClientID: strings.TrimSpace(o.ClientID), ClientSecret: strings.TrimSpace(o.ClientSecret),
		}
	}
	return ac, nil
}

// server converts one server element; ok is false for what saslgate cannot use.
func (x xmlServer) server(placeholders *strings.Replacer) (Server, bool) {
	typ := strings.ToLower(strings.TrimSpace(x.Type))
	switch typ {
	case TypeIMAP, TypePOP3, TypeSMTP, TypeManageSieve:
	default:
		return Server{}, false
	}
	oauth := false
	for _, a := range x.Authentication {
		// The draft's example says OAuth2, its list of TCP methods says OAuth.
		if a = strings.TrimSpace(a); strings.EqualFold(a, "OAuth2") || strings.EqualFold(a, "OAuth") {
			oauth = true
		}
	}
	host := strings.TrimSpace(x.Hostname)
	port, err := strconv.Atoi(strings.TrimSpace(x.Port))
	if !oauth || !validHost(host) || err != nil || port < 1 || port > 65535 {
		return Server{}, false
	}
	s := Server{Type: typ, Host: strings.TrimSuffix(host, "."), Port: port}
	switch strings.ToUpper(strings.TrimSpace(x.SocketType)) {
	case "SSL", "TLS":
		s.TLS = probe.TLSImplicit
	case "STARTTLS":
		s.TLS = probe.TLSStartTLS
	case "PLAIN":
		s.TLS = probe.TLSNone
	default:
		return Server{}, false
	}
	s.Username = placeholders.Replace(strings.TrimSpace(x.Username))
	if strings.ContainsAny(s.Username, "\x00\r\n") {
		return Server{}, false
	}
	return s, true
}

// validHost accepts a DNS name or an IP address: no ports, paths, spaces or controls.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if net.ParseIP(h) != nil {
		return true
	}
	for _, r := range h {
		if !(r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 0x7f) {
			return false
		}
	}
	return !strings.HasPrefix(h, ".") && !strings.Contains(h, "..")
}

// ParseWebFinger reads a JRD (RFC 7033 §4.4) and returns the href of the first link of the
// OpenID Connect issuer relation, "" when there is none.
func ParseWebFinger(body []byte) (string, error) {
	if len(body) > maxDocument {
		return "", errors.New("maildiscover: WebFinger answer too large")
	}
	var jrd struct {
		Subject string `json:"subject"`
		Links   []struct {
			Rel  string `json:"rel"`
			Href string `json:"href"`
		} `json:"links"`
	}
	if err := json.Unmarshal(body, &jrd); err != nil {
		return "", fmt.Errorf("maildiscover: WebFinger answer: %v", err)
	}
	for _, l := range jrd.Links {
		if l.Rel == IssuerRel && l.Href != "" {
			return l.Href, nil
		}
	}
	return "", nil
}

// ResourceMetadata is what saslgate uses of RFC 9728 §2 protected resource metadata.
type ResourceMetadata struct {
	Resource             string   `json:"resource"`
	AuthorizationServers []string `json:"authorization_servers"`
	ScopesSupported      []string `json:"scopes_supported"`
}

// ParseResourceMetadata reads protected resource metadata fetched for the resource
// identifier resource, which the document must name exactly (RFC 9728 §3.3).
func ParseResourceMetadata(body []byte, resource string) (*ResourceMetadata, error) {
	if len(body) > maxDocument {
		return nil, errors.New("maildiscover: resource metadata too large")
	}
	var m ResourceMetadata
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("maildiscover: resource metadata: %v", err)
	}
	if m.Resource != resource {
		return nil, fmt.Errorf("maildiscover: resource metadata names resource %q, not %q (RFC 9728 §3.3)", m.Resource, resource)
	}
	return &m, nil
}

// Challenge is the RFC 7628 §3.2.2 error a server sends for a refused token.
type Challenge struct {
	Status              string `json:"status"`
	Scope               string `json:"scope"`
	OpenIDConfiguration string `json:"openid-configuration"`
}

// ParseChallenge reads the decoded JSON of an error challenge.
func ParseChallenge(b []byte) (*Challenge, error) {
	var c Challenge
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("maildiscover: error challenge: %v", err)
	}
	return &c, nil
}

// CheckIssuer checks that s can be an issuer identifier (RFC 8414 §2: a URL with the https
// scheme and no query or fragment; http too when allowHTTP).
func CheckIssuer(s string, allowHTTP bool) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("maildiscover: issuer %q: %v", s, err)
	}
	if !(u.Scheme == "https" || allowHTTP && u.Scheme == "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#") {
		return fmt.Errorf("maildiscover: issuer %q: want an https URL without query or fragment (RFC 8414 §2)", s)
	}
	return nil
}

// IssuerURL turns the autoconfig oAuth2 element's issuer into an issuer identifier: a URL is
// taken as it is, a bare host name (as in the draft's sample) gets the https scheme.
func IssuerURL(s string) string {
	if strings.Contains(s, "://") {
		return s
	}
	return "https://" + s
}
