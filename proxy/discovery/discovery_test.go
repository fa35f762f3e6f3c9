package discovery

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/internal/idpmeta"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

const issuer = "https://idp.example.com/realms/mail"

// protocols stand for cmd/saslgate's registry (imap.Protocol, smtp.Protocol), with what
// discovery reads of them.
var protocols = []proxy.Protocol{
	{Name: "imap", Autoconfig: proxy.AutoconfigIncoming},
	{Name: "smtp", Autoconfig: proxy.AutoconfigOutgoing},
}

func newHandler(t *testing.T, metaErr error) *Handler {
	t.Helper()
	h, err := New(Config{Address: "127.0.0.1:0", Domains: []string{"example.com", "example.org"}, DisplayName: "Example Mail"},
		[]proxy.ListenerConfig{
			{Name: "imaps", Protocol: "imap", Address: "0.0.0.0:993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"},
			{Name: "imap", Protocol: "imap", Address: "0.0.0.0:1143", TLS: proxy.TLSStartTLS, PublicHost: "mail.example.com", PublicPort: 143},
			{Name: "submission", Protocol: "smtp", Address: "0.0.0.0:587", TLS: proxy.TLSStartTLS, PublicHost: "mail.example.com"},
			{Name: "internal", Protocol: "imap", Address: "127.0.0.1:10993", TLS: proxy.TLSImplicit},
		},
		protocols,
		[]introspect.IssuerConfig{
			{Issuer: issuer, Scopes: map[string][]string{"imap": {"email", "mail"}, "smtp": {"mail", "send"}}},
			{Issuer: "https://other.example.net", Username: introspect.UsernameConfig{AllowedDomains: []string{"example.net"}}},
		},
		func(ctx context.Context, is introspect.IssuerConfig) (*idpmeta.Metadata, error) {
			if metaErr != nil {
				return nil, metaErr
			}
			return &idpmeta.Metadata{Issuer: is.Issuer, AuthorizationEndpoint: is.Issuer + "/auth", TokenEndpoint: is.Issuer + "/token"}, nil
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, target string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Result()
}

// node is a generic XML element tree, to compare the document's whole structure.
type node struct {
	Name     string
	Attrs    map[string]string
	Text     string
	Children []*node
}

func parseTree(t *testing.T, r io.Reader) *node {
	t.Helper()
	dec := xml.NewDecoder(r)
	var stack []*node
	var root *node
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{Name: tok.Name.Local, Attrs: map[string]string{}}
			for _, a := range tok.Attr {
				n.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += strings.TrimSpace(string(tok))
			}
		}
	}
	return root
}

// el builds an expected element: el("name", "text") or el("name", attrs, children...).
func el(name string, parts ...any) *node {
	n := &node{Name: name, Attrs: map[string]string{}}
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			n.Text = p
		case map[string]string:
			n.Attrs = p
		case *node:
			n.Children = append(n.Children, p)
		}
	}
	return n
}

func (n *node) String() string {
	var b strings.Builder
	var walk func(*node, string)
	walk = func(n *node, indent string) {
		b.WriteString(indent + "<" + n.Name)
		for k, v := range n.Attrs {
			b.WriteString(" " + k + "=" + v)
		}
		b.WriteString(">" + n.Text + "\n")
		for _, c := range n.Children {
			walk(c, indent+"  ")
		}
	}
	walk(n, "")
	return b.String()
}

func TestAutoconfigStructure(t *testing.T) {
	h := newHandler(t, nil)
	srv := func(elem, typ, port, socket string) *node {
		return el(elem, map[string]string{"type": typ},
			el("hostname", "mail.example.com"), el("port", port), el("socketType", socket),
			el("authentication", "OAuth2"), el("username", "%EMAILADDRESS%"))
	}
	want := el("clientConfig", map[string]string{"version": "1.1"},
		el("emailProvider", map[string]string{"id": "example.org"},
			el("domain", "example.com"), el("domain", "example.org"),
			el("displayName", "Example Mail"), el("displayShortName", "Example Mail"),
			srv("incomingServer", "imap", "993", "SSL"),
			srv("incomingServer", "imap", "143", "STARTTLS"),
			srv("outgoingServer", "smtp", "587", "STARTTLS"),
		),
		el("oAuth2",
			el("issuer", issuer), // a path: not a bare host
			el("scope", "openid offline_access email mail send"),
			el("authURL", issuer+"/auth"),
			el("tokenURL", issuer+"/token"),
		),
	)
	for _, path := range []string{AutoconfigPath, WellKnownAutoconfigPath} {
		resp := get(t, h, path+"?emailaddress="+url.QueryEscape("Alice@Example.ORG"))
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/xml") {
			t.Fatalf("%s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		got := parseTree(t, resp.Body)
		if got.String() != want.String() {
			t.Errorf("%s:\ngot\n%s\nwant\n%s", path, got, want)
		}
	}

	if resp := get(t, h, AutoconfigPath+"?emailaddress=alice@example.net"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("foreign domain: %s, want 404", resp.Status)
	}
	// Without the issuer's endpoints the servers are still announced.
	resp := get(t, newHandler(t, errors.New("idp down")), AutoconfigPath)
	doc := parseTree(t, resp.Body)
	if len(doc.Children) != 1 || doc.Children[0].Name != "emailProvider" || doc.Children[0].Attrs["id"] != "example.com" {
		t.Errorf("with the IdP down:\n%s", doc)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, AutoconfigPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

func TestAutoconfigLocalPartUsername(t *testing.T) {
	h, err := New(Config{Address: ":80", Domains: []string{"example.com"}},
		[]proxy.ListenerConfig{{Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"}}, protocols,
		[]introspect.IssuerConfig{{Issuer: issuer, Username: introspect.UsernameConfig{StripDomain: true}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(get(t, h, AutoconfigPath).Body)
	if !strings.Contains(string(body), "<username>%EMAILLOCALPART%</username>") || strings.Contains(string(body), "oAuth2") {
		t.Errorf("strip_domain issuer, no metadata:\n%s", body)
	}
}

func TestWebFinger(t *testing.T) {
	h := newHandler(t, nil)
	type jrd struct {
		Subject string `json:"subject"`
		Links   []struct {
			Rel  string `json:"rel"`
			Href string `json:"href"`
		} `json:"links"`
	}
	q := func(params ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(params); i += 2 {
			v.Add(params[i], params[i+1])
		}
		return WebFingerPath + "?" + v.Encode()
	}
	cases := []struct {
		name, target string
		status       int
		links        int
	}{
		{"issuer relation", q("resource", "acct:alice@example.com", "rel", IssuerRel), 200, 1},
		{"no rel: all links", q("resource", "acct:alice@example.com"), 200, 1},
		{"percent-encoded userpart (RFC 7565)", q("resource", "acct:alice%40home@EXAMPLE.org"), 200, 1},
		{"other rel: no links", q("resource", "acct:alice@example.com", "rel", "http://webfinger.net/rel/avatar"), 200, 0},
		{"missing resource", q("rel", IssuerRel), 400, 0},
		{"two resources", q("resource", "acct:a@example.com", "resource", "acct:b@example.com"), 400, 0},
		{"foreign domain", q("resource", "acct:alice@example.net"), 404, 0},
		{"not acct", q("resource", "https://example.com/alice"), 404, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := get(t, h, c.target)
			if resp.StatusCode != c.status {
				t.Fatalf("%s: %s, want %d", c.target, resp.Status, c.status)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Error("no Access-Control-Allow-Origin: * (RFC 7033 §5)")
			}
			if c.status != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/jrd+json" {
				t.Errorf("Content-Type %q, want application/jrd+json (RFC 7033 §10.2)", ct)
			}
			var raw map[string]json.RawMessage
			body, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			for k := range raw {
				if k != "subject" && k != "links" {
					t.Errorf("unexpected member %q", k)
				}
			}
			var d jrd
			_ = json.Unmarshal(body, &d)
			res, _ := url.ParseQuery(strings.SplitN(c.target, "?", 2)[1])
			if d.Subject != res.Get("resource") || len(d.Links) != c.links {
				t.Errorf("JRD %s", body)
			}
			for _, l := range d.Links {
				if l.Rel != IssuerRel || l.Href != issuer {
					t.Errorf("link %+v", l)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("empty section: %v", err)
	}
	err := Config{Address: "nowhere", Domains: []string{"a@b", ""}, Scope: `ok "bad"`}.Validate()
	for _, want := range []string{"http.address", "http.domains[0]", "http.domains[1]", "http.scope"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	if err := (Config{TLS: true}).Validate(); err == nil {
		t.Error("tls without address accepted")
	}
	if _, err := New(Config{Address: ":80", Domains: []string{"example.com"}},
		[]proxy.ListenerConfig{{Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit}}, protocols,
		[]introspect.IssuerConfig{{Issuer: issuer}}, nil, nil); err == nil || !strings.Contains(err.Error(), "public_host") {
		t.Errorf("no announced listener: %v", err)
	}
}

// The program's protocols decide what is announced: a protocol the autoconfig format has no
// server type for (ManageSieve) is left out, and a listener of a protocol the program does
// not serve is an error.
func TestAutoconfigProtocols(t *testing.T) {
	cfg := Config{Address: ":80", Domains: []string{"example.com"}}
	withSieve := append(slices.Clone(protocols), proxy.Protocol{Name: "sieve"})
	listeners := []proxy.ListenerConfig{
		{Name: "imaps", Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"},
		{Name: "sieve", Protocol: "sieve", Address: ":4190", TLS: proxy.TLSStartTLS, PublicHost: "mail.example.com"},
	}
	issuers := []introspect.IssuerConfig{{Issuer: issuer}}
	h, err := New(cfg, listeners, withSieve, issuers, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.String(), "imap mail.example.com:993 (implicit)"; got != want {
		t.Errorf("announces %q, want %q", got, want)
	}
	if body, _ := io.ReadAll(get(t, h, AutoconfigPath).Body); strings.Contains(string(body), "sieve") || strings.Contains(string(body), "4190") {
		t.Errorf("the sieve listener is announced:\n%s", body)
	}
	if _, err := New(cfg, listeners, protocols, issuers, nil, nil); err == nil || !strings.Contains(err.Error(), `listener sieve: unknown protocol "sieve"`) {
		t.Errorf("listener of an unserved protocol: %v", err)
	}
}
