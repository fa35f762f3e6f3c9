package discovery

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

// resourceDoc is the RFC 9728 §2 metadata of one protected resource identifier.
type resourceDoc struct {
	host     string // the identifier's host, as requests for it carry it in Host (hostKey)
	fallback bool   // http.resource: answers at its path whatever the Host
	body     []byte
}

// resourceMetadata is the document of RFC 9728 §2, with the members saslgate fills.
// bearer_methods_supported is left out: its values (header, body, query) are HTTP's, and SASL
// is none of them, while an empty list would say that no bearer token is accepted at all.
type resourceMetadata struct {
	Resource             string   `json:"resource"`
	AuthorizationServers []string `json:"authorization_servers"`
	ScopesSupported      []string `json:"scopes_supported,omitempty"`
	ResourceName         string   `json:"resource_name,omitempty"`
	// RFC 8705 §3.4; true only when a listener of the resource's protocols rejects unbound
	// tokens, so a client asks for a bound token where a bearer one would fail.
	CertBound bool `json:"tls_client_certificate_bound_access_tokens"`
}

// protectedResources returns the RFC 9728 metadata of http.resource and of every resource the
// issuers accept for a protocol (introspect.IssuerConfig.Resources), by the path RFC 9728 §3.1
// serves each at: fixed at start. A resource's authorization servers are the issuers that
// accept tokens for it (its identifier in their audience or resources, or any audience at
// all), and its scopes those they require for the protocols they accept it for; http.resource,
// when no issuer names it, keeps listing every issuer and every scope.
func protectedResources(cfg Config, listeners []proxy.ListenerConfig, issuers []introspect.IssuerConfig) (map[string][]resourceDoc, error) {
	var ids []string
	if cfg.Resource != "" {
		ids = append(ids, cfg.Resource)
	}
	for _, is := range issuers {
		for _, proto := range slices.Sorted(maps.Keys(is.Resources)) {
			for _, r := range is.Resources[proto] {
				if !slices.Contains(ids, r) {
					ids = append(ids, r)
				}
			}
		}
	}
	docs := map[string][]resourceDoc{}
	for _, id := range ids {
		u, err := url.Parse(id)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("discovery: resource %q is not an absolute URL", id)
		}
		body, err := json.Marshal(resourceDocument(cfg, id, listeners, issuers))
		if err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		// RFC 9728 §3.1: the well-known string goes between the host and the path; a terminal
		// slash is removed first.
		path := ProtectedResourcePath + strings.TrimSuffix(u.EscapedPath(), "/")
		docs[path] = append(docs[path], resourceDoc{host: hostKey(u.Host), fallback: id == cfg.Resource, body: body})
	}
	return docs, nil
}

// resourceDocument is the metadata of resource identifier id.
func resourceDocument(cfg Config, id string, listeners []proxy.ListenerConfig, issuers []introspect.IssuerConfig) resourceMetadata {
	// declared are the protocols an issuer accepts id for, nil for none; every protocol when
	// id is one of its audience values.
	declared := func(is introspect.IssuerConfig) (protos []string, all bool) {
		if slices.Contains(is.Audience, id) {
			return nil, true
		}
		for _, proto := range slices.Sorted(maps.Keys(is.Resources)) {
			if slices.Contains(is.Resources[proto], id) {
				protos = append(protos, proto)
			}
		}
		return protos, false
	}
	named, allProtocols := false, false
	var protocols []string
	for _, is := range issuers {
		protos, all := declared(is)
		named = named || all || len(protos) > 0
		allProtocols = allProtocols || all
		for _, p := range protos {
			if !slices.Contains(protocols, p) {
				protocols = append(protocols, p)
			}
		}
	}
	unnamed := !named // only http.resource can be: every issuer, every scope
	allProtocols = allProtocols || unnamed
	slices.Sort(protocols)

	md := resourceMetadata{Resource: id, ResourceName: cfg.DisplayName, AuthorizationServers: []string{}}
	addScopes := func(s []string) {
		for _, v := range s {
			if !slices.Contains(md.ScopesSupported, v) {
				md.ScopesSupported = append(md.ScopesSupported, v)
			}
		}
	}
	for _, is := range issuers {
		protos, all := declared(is)
		switch {
		case unnamed || all || is.InsecureSkipAudienceCheck && allProtocols:
			addScopes(is.RequiredScopes())
		case is.InsecureSkipAudienceCheck:
			// It takes any audience, so its tokens work wherever id is a resource.
			for _, p := range protocols {
				addScopes(is.Scopes[p])
			}
		case len(protos) > 0:
			for _, p := range protos {
				addScopes(is.Scopes[p])
			}
		default:
			continue
		}
		if !slices.Contains(md.AuthorizationServers, is.Issuer) {
			md.AuthorizationServers = append(md.AuthorizationServers, is.Issuer)
		}
	}
	md.CertBound = slices.ContainsFunc(listeners, func(l proxy.ListenerConfig) bool {
		return l.RequireBoundTokens && (allProtocols || slices.Contains(protocols, l.Protocol))
	})
	return md
}

// hostKey is a Host as resource lookups compare it: lowercase, without a final dot, and
// without the port when it is https's.
func hostKey(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), ""
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if port == "" || port == "443" {
		return host
	}
	return net.JoinHostPort(host, port)
}

// protectedResource serves the RFC 9728 §3.2 response for the resource at the request's path:
// the one whose host is the request's Host (resources of several hosts may share a path and
// this listener), else http.resource, else the only resource at that path. The client checks
// the "resource" member against the identifier it started from (§3.3).
func (h *Handler) protectedResource(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	docs := h.resources[r.URL.EscapedPath()]
	host := hostKey(r.Host)
	i := slices.IndexFunc(docs, func(d resourceDoc) bool { return d.host == host })
	if i < 0 {
		i = slices.IndexFunc(docs, func(d resourceDoc) bool { return d.fallback })
	}
	if i < 0 && len(docs) == 1 {
		i = 0
	}
	if i < 0 {
		http.Error(w, "no protected resource here", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(docs[i].body)
}
