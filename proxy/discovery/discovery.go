package discovery

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

// Paths served.
const (
	AutoconfigPath          = "/mail/config-v1.1.xml"
	WellKnownAutoconfigPath = "/.well-known/autoconfig/mail/config-v1.1.xml"
	WebFingerPath           = "/.well-known/webfinger"
	// ProtectedResourcePath is RFC 9728 §3's well-known path; a resource identifier's path
	// is appended to it.
	ProtectedResourcePath = "/.well-known/oauth-protected-resource"

	// IssuerRel is the WebFinger link relation of OpenID Connect Discovery 1.0 §2.
	IssuerRel = "http://openid.net/specs/connect/1.0/issuer"
)

// Handler serves autoconfig, WebFinger and RFC 9728 metadata. Build it with New.
type Handler struct {
	cfg       Config
	servers   []server
	issuers   []introspect.IssuerConfig
	log       *slog.Logger
	mux       *http.ServeMux
	meta      map[string]*metaCache    // by issuer; empty without a MetadataFunc
	resources map[string][]resourceDoc // RFC 9728 documents by request path
}

// server is one announced listener.
type server struct {
	protocol   string // the listener's, a proxy.Protocol.Name: the autoconfig server type
	autoconfig string // the protocol's proxy.Protocol.Autoconfig
	host       string
	port       int
	tls        string // proxy.TLSImplicit or proxy.TLSStartTLS
}

// New returns the handler for cfg. Listeners are announced with their public_host and
// public_port (the bound port when unset); listeners without public_host, or of a protocol
// autoconfig has no server type for, are not announced, and at least one must be. protocols
// are the program's front ends, which listeners' protocols name. metadata may be nil: the
// autoconfig document then has no oAuth2 element. Otherwise every issuer's metadata is read
// in the background, starting now: New does not wait for it, and an issuer that cannot be
// read is logged and left out of the documents until it can. A nil logger discards.
func New(cfg Config, listeners []proxy.ListenerConfig, protocols []proxy.Protocol, issuers []introspect.IssuerConfig, metadata MetadataFunc, logger *slog.Logger) (*Handler, error) {
	return build(cfg, listeners, protocols, issuers, metadata, logger, time.Now)
}

func build(cfg Config, listeners []proxy.ListenerConfig, protocols []proxy.Protocol, issuers []introspect.IssuerConfig, metadata MetadataFunc, logger *slog.Logger, now func() time.Time) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(issuers) == 0 {
		return nil, errors.New("discovery: no issuer")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, issuers: issuers, log: logger, meta: map[string]*metaCache{}}
	for _, issuer := range slices.Sorted(maps.Keys(cfg.PublicClientIDs)) {
		id := cfg.PublicClientIDs[issuer]
		i := slices.IndexFunc(issuers, func(is introspect.IssuerConfig) bool { return is.Issuer == issuer })
		if i < 0 {
			return nil, fmt.Errorf("discovery: http.public_client_ids[%q]: not an issuer of tokens.issuers", issuer)
		}
		// Publishing a client its own tokens are refused for would leave every client that
		// uses it locked out.
		if allowed := issuers[i].AllowedClientIDs; len(allowed) > 0 && !slices.Contains(allowed, id) {
			return nil, fmt.Errorf("discovery: http.public_client_ids[%q]: %q is not in tokens.issuers[%d].allowed_client_ids, so its tokens would be refused", issuer, id, i)
		}
	}
	for _, l := range listeners {
		i := slices.IndexFunc(protocols, func(p proxy.Protocol) bool { return p.Name == l.Protocol })
		if i < 0 {
			return nil, fmt.Errorf("discovery: listener %s: unknown protocol %q", l.Name, l.Protocol)
		}
		if l.PublicHost == "" || protocols[i].Autoconfig == "" {
			continue
		}
		port := l.PublicPort
		if port == 0 {
			_, p, _ := net.SplitHostPort(l.Address)
			port, _ = strconv.Atoi(p)
		}
		h.servers = append(h.servers, server{protocol: l.Protocol, autoconfig: protocols[i].Autoconfig, host: l.PublicHost, port: port, tls: l.TLS})
	}
	if len(h.servers) == 0 {
		return nil, errors.New("discovery: no listener has a public_host to announce (http needs one)")
	}
	resources, err := protectedResources(cfg, listeners, issuers)
	if err != nil {
		return nil, err
	}
	h.resources = resources
	h.mux = http.NewServeMux()
	h.mux.HandleFunc(AutoconfigPath, h.autoconfig)
	h.mux.HandleFunc(WellKnownAutoconfigPath, h.autoconfig)
	h.mux.HandleFunc(WebFingerPath, h.webfinger)
	if len(resources) > 0 {
		// One handler for the whole well-known tree: resource paths are data, not patterns.
		h.mux.HandleFunc(ProtectedResourcePath, h.protectedResource)
		h.mux.HandleFunc(ProtectedResourcePath+"/", h.protectedResource)
	}
	if metadata != nil {
		for _, is := range issuers {
			c := &metaCache{issuer: is, fetch: metadata, clientID: cfg.PublicClientIDs[is.Issuer], log: logger, now: now}
			h.meta[is.Issuer] = c
			c.mu.Lock()
			c.start()
			c.mu.Unlock()
		}
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// domainOf returns the configured domain an address is in, ASCII case-insensitively.
func (h *Handler) domainOf(addr string) (string, bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", false
	}
	for _, d := range h.cfg.Domains {
		if strings.EqualFold(addr[at+1:], d) {
			return d, true
		}
	}
	return "", false
}

// issuersFor are the issuers for a domain: those whose username.allowed_domains lists it, and
// those that restrict no domain, in configuration order.
func (h *Handler) issuersFor(domain string) []introspect.IssuerConfig {
	var out []introspect.IssuerConfig
	for _, is := range h.issuers {
		allowed := is.Username.AllowedDomains
		if len(allowed) == 0 || slices.ContainsFunc(allowed, func(d string) bool { return strings.EqualFold(d, domain) }) {
			out = append(out, is)
		}
	}
	return out
}

// webfinger answers RFC 7033 §4 queries for acct:user@domain with the issuer relation.
func (h *Handler) webfinger(w http.ResponseWriter, r *http.Request) {
	// RFC 7033 §5: servers should allow cross-origin queries.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	q := r.URL.Query()
	resource := q.Get("resource")
	if resource == "" || len(q["resource"]) > 1 {
		// RFC 7033 §4.2: a missing (or ambiguous) resource is a bad request.
		http.Error(w, "exactly one resource parameter is required", http.StatusBadRequest)
		return
	}
	addr, ok := acctAddress(resource)
	if !ok {
		http.Error(w, "only acct: resources are known here", http.StatusNotFound)
		return
	}
	domain, ok := h.domainOf(addr)
	if !ok {
		http.Error(w, "not a domain served here", http.StatusNotFound)
		return
	}
	issuers := h.issuersFor(domain)
	if len(issuers) == 0 {
		http.Error(w, "no issuer for this domain", http.StatusNotFound)
		return
	}
	// RFC 7033 §4.3: with rel parameters, only links of those relations are returned.
	rels := q["rel"]
	jrd := struct {
		Subject string `json:"subject"`
		Links   []link `json:"links"`
	}{Subject: resource, Links: []link{}}
	if len(rels) == 0 || slices.Contains(rels, IssuerRel) {
		for _, is := range issuers {
			jrd.Links = append(jrd.Links, link{Rel: IssuerRel, Href: is.Issuer})
		}
	}
	w.Header().Set("Content-Type", "application/jrd+json")
	_ = json.NewEncoder(w).Encode(jrd)
}

type link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

// acctAddress returns user@host of an acct: URI (RFC 7565 §7: the userpart may be
// percent-encoded).
func acctAddress(resource string) (string, bool) {
	rest, ok := strings.CutPrefix(resource, "acct:")
	if !ok {
		if len(resource) > 5 && strings.EqualFold(resource[:5], "acct:") {
			rest = resource[5:]
		} else {
			return "", false
		}
	}
	addr, err := url.PathUnescape(rest)
	if err != nil || strings.ContainsAny(addr, "\x00\r\n/ ") {
		return "", false
	}
	return addr, true
}

// clientConfig is Thunderbird's config-v1.1.xml (the ISPDB format).
type clientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider emailProvider `xml:"emailProvider"`
	OAuth2   *oauth2       `xml:"oAuth2,omitempty"`
}

type emailProvider struct {
	ID               string      `xml:"id,attr"`
	Domains          []string    `xml:"domain"`
	DisplayName      string      `xml:"displayName"`
	DisplayShortName string      `xml:"displayShortName"`
	Incoming         []xmlServer `xml:"incomingServer"`
	Outgoing         []xmlServer `xml:"outgoingServer"`
}

type xmlServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

// oauth2 is draft-ietf-mailmaint-autoconfig's oAuth2 element. It never carries a
// clientSecret: a client ID published to every mail client is a public client's.
type oauth2 struct {
	Issuer   string `xml:"issuer"`
	Scope    string `xml:"scope"`
	AuthURL  string `xml:"authURL"`
	TokenURL string `xml:"tokenURL"`
	ClientID string `xml:"clientID,omitempty"`
}

// Thunderbird's placeholders for the address the user typed.
const (
	emailAddress   = "%EMAILADDRESS%"
	emailLocalPart = "%EMAILLOCALPART%"
)

func (h *Handler) autoconfig(w http.ResponseWriter, r *http.Request) {
	domain := h.cfg.Domains[0]
	// Thunderbird adds ?emailaddress=<what the user typed>.
	if addr := r.URL.Query().Get("emailaddress"); addr != "" {
		d, ok := h.domainOf(addr)
		if !ok {
			http.Error(w, "not a domain served here", http.StatusNotFound)
			return
		}
		domain = d
	}
	issuers := h.issuersFor(domain)
	if len(issuers) == 0 {
		http.Error(w, "no issuer for this domain", http.StatusNotFound)
		return
	}
	is := issuers[0]
	// The SASL authzid clients send must equal the mapped username (proxy.Authorize).
	username := emailAddress
	if is.Username.StripDomain {
		username = emailLocalPart
	}
	name := h.cfg.DisplayName
	if name == "" {
		name = domain
	}
	doc := clientConfig{Version: "1.1", Provider: emailProvider{
		ID: domain, Domains: h.cfg.Domains, DisplayName: name, DisplayShortName: name,
	}}
	for _, s := range h.servers {
		x := xmlServer{Type: s.protocol, Hostname: s.host, Port: s.port, SocketType: "SSL", Authentication: "OAuth2", Username: username}
		if s.tls == proxy.TLSStartTLS {
			x.SocketType = "STARTTLS"
		}
		if s.autoconfig == proxy.AutoconfigOutgoing {
			doc.Provider.Outgoing = append(doc.Provider.Outgoing, x)
		} else {
			doc.Provider.Incoming = append(doc.Provider.Incoming, x)
		}
	}
	if c := h.meta[is.Issuer]; c != nil {
		if m := c.get(r.Context()); m != nil {
			doc.OAuth2 = &oauth2{Issuer: autoconfigIssuer(is.Issuer), Scope: h.scope(is),
				AuthURL: m.AuthorizationEndpoint, TokenURL: m.TokenEndpoint, ClientID: h.cfg.PublicClientIDs[is.Issuer]}
		}
	}
	body, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}

// autoconfigIssuer is the issuer as the autoconfig document names it. The draft's sample
// names a bare host, as Thunderbird names OAuth providers; an issuer identifier with a path
// (https://idp.example.com/realms/mail), or a trailing slash, cannot be told by its host
// without losing what RFC 8414 discovery and the RFC 9207 "iss" comparison need, so it goes
// out whole.
func autoconfigIssuer(issuer string) string {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return issuer
	}
	return u.Host
}

// scope is the configured scope, or what the issuer requires for any protocol plus openid
// and offline_access (a refresh token, so clients need not ask the user again).
func (h *Handler) scope(is introspect.IssuerConfig) string {
	if h.cfg.Scope != "" {
		return h.cfg.Scope
	}
	scopes := []string{"openid", "offline_access"}
	for _, s := range is.RequiredScopes() {
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return strings.Join(scopes, " ")
}

// String describes the announced servers, for the startup log.
func (h *Handler) String() string {
	var parts []string
	for _, s := range h.servers {
		parts = append(parts, fmt.Sprintf("%s %s:%d (%s)", s.protocol, s.host, s.port, s.tls))
	}
	return strings.Join(parts, ", ")
}
