package discovery

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

func TestProtectedResourceMetadata(t *testing.T) {
	issuers := []introspect.IssuerConfig{
		{Issuer: issuer, Scopes: map[string][]string{"imap": {"email", "mail"}, "smtp": {"mail", "send"}}},
		{Issuer: "https://other.example.net"},
	}
	listener := proxy.ListenerConfig{Name: "imaps", Protocol: "imap", Address: "0.0.0.0:993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"}
	bound := listener
	bound.Name, bound.ClientCertificates, bound.RequireBoundTokens = "imaps-mtls", proxy.ClientCertRequest, true
	cases := []struct {
		name, resource, path string
		listeners            []proxy.ListenerConfig
		certBound            bool
	}{
		{"host only", "https://mail.example.com", "/.well-known/oauth-protected-resource", []proxy.ListenerConfig{listener}, false},
		{"with a path and bound tokens", "https://mail.example.com/imap/", "/.well-known/oauth-protected-resource/imap", []proxy.ListenerConfig{listener, bound}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(Config{Address: "127.0.0.1:0", Domains: []string{"example.com"}, DisplayName: "Example Mail", Resource: tc.resource}, tc.listeners, protocols, issuers, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			res := get(t, h, tc.path)
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("GET %s: %s %q", tc.path, res.Status, res.Header.Get("Content-Type"))
			}
			var md map[string]any
			if err := json.NewDecoder(res.Body).Decode(&md); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"resource":              tc.resource,
				"authorization_servers": []any{issuer, "https://other.example.net"},
				"scopes_supported":      []any{"email", "mail", "send"},
				"resource_name":         "Example Mail",
				"tls_client_certificate_bound_access_tokens": tc.certBound,
			}
			if !reflect.DeepEqual(md, want) {
				t.Errorf("metadata %v\nwant %v", md, want)
			}
		})
	}
	h := newHandler(t, nil)
	if res := get(t, h, ProtectedResourcePath); res.StatusCode != http.StatusNotFound {
		t.Errorf("without http.resource: %s, want 404", res.Status)
	}
}

func TestConfigValidateResource(t *testing.T) {
	for _, r := range []string{"http://mail.example.com", "mail.example.com", "https://mail.example.com/#x", "https://mail.example.com/?a=b", "https://"} {
		err := Config{Address: ":443", Domains: []string{"example.com"}, Resource: r}.Validate()
		if err == nil || !strings.Contains(err.Error(), "http.resource") {
			t.Errorf("resource %q: %v, want an http.resource error", r, err)
		}
	}
	if err := (Config{Resource: "https://mail.example.com"}).Validate(); err == nil {
		t.Error("resource without address accepted")
	}
}

// RFC 9728 metadata for each protected resource identifier the issuers accept (their
// resources by protocol, as draft-ietf-mailmaint-oauth-public derives them from the mail
// servers' host names), beside the gateway-wide http.resource: each document names the issuers
// that accept tokens for that resource and the scopes they require for its protocols, and is
// found by the client's Host where several share a path (RFC 9728 §3.1 builds the metadata URL
// from the identifier's host).
func TestProtectedResourcePerProtocol(t *testing.T) {
	const (
		imapRes    = "https://imap.example.com"
		smtpRes    = "https://smtp.example.com"
		mailRes    = "https://mail.example.com"
		gatewayRes = "https://gateway.example.com/mail"
		other      = "https://other.example.net"
		userinfo   = "https://userinfo.example.org"
		mail       = introspect.MailScope
	)
	issuers := []introspect.IssuerConfig{
		{Issuer: issuer, Audience: []string{"saslgate"},
			Scopes:    map[string][]string{"imap": {mail}, "pop3": {mail}, "smtp": {mail, "send"}},
			Resources: map[string][]string{"imap": {imapRes, mailRes}, "pop3": {mailRes}, "smtp": {smtpRes, mailRes}}},
		// Takes mail.example.com as an audience: for every protocol.
		{Issuer: other, Audience: []string{mailRes}, Scopes: map[string][]string{"imap": {"email"}}},
		// Takes any audience at all.
		{Issuer: userinfo, Mode: "userinfo", InsecureSkipAudienceCheck: true, Scopes: map[string][]string{"smtp": {"smtp.send"}}},
	}
	withPOP3 := append(slices.Clone(protocols), proxy.Protocol{Name: "pop3", Autoconfig: proxy.AutoconfigIncoming})
	listeners := []proxy.ListenerConfig{
		{Name: "imaps", Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "imap.example.com"},
		{Name: "pop3s", Protocol: "pop3", Address: ":995", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"},
		{Name: "submissions", Protocol: "smtp", Address: ":465", TLS: proxy.TLSImplicit, PublicHost: "smtp.example.com",
			ClientCertificates: proxy.ClientCertRequest, RequireBoundTokens: true},
	}
	h, err := New(Config{Address: ":443", Domains: []string{"example.com"}, Resource: gatewayRes}, listeners, withPOP3, issuers, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := func(resource string, servers, scopes []any, bound bool) map[string]any {
		return map[string]any{"resource": resource, "authorization_servers": servers, "scopes_supported": scopes,
			"tls_client_certificate_bound_access_tokens": bound}
	}
	cases := []struct {
		name, host, path string
		want             map[string]any // nil: 404
	}{
		{"imap's host: the issuers that take its resource", "imap.example.com", ProtectedResourcePath,
			doc(imapRes, []any{issuer, userinfo}, []any{mail}, false)},
		{"Host case and the default port do not matter", "IMAP.Example.COM:443", ProtectedResourcePath,
			doc(imapRes, []any{issuer, userinfo}, []any{mail}, false)},
		{"smtp's host: its scopes, bound tokens required on its listener", "smtp.example.com", ProtectedResourcePath,
			doc(smtpRes, []any{issuer, userinfo}, []any{mail, "send", "smtp.send"}, true)},
		{"a host every protocol shares", "mail.example.com", ProtectedResourcePath,
			doc(mailRes, []any{issuer, other, userinfo}, []any{mail, "send", "email", "smtp.send"}, true)},
		{"http.resource answers at its own path whatever the Host", "127.0.0.1:8443", ProtectedResourcePath + "/mail",
			doc(gatewayRes, []any{issuer, other, userinfo}, []any{mail, "send", "email", "smtp.send"}, true)},
		{"a Host none of the resources at that path has", "unknown.example.com", ProtectedResourcePath, nil},
		{"a final dot does not matter either", "imap.example.com.", ProtectedResourcePath,
			doc(imapRes, []any{issuer, userinfo}, []any{mail}, false)},
		{"another port is another host", "imap.example.com:8443", ProtectedResourcePath, nil},
		{"a path no resource has", "imap.example.com", ProtectedResourcePath + "/imap", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			if tc.want == nil {
				if res.StatusCode != http.StatusNotFound {
					t.Errorf("GET %s (Host %s): %s, want 404", tc.path, tc.host, res.Status)
				}
				return
			}
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("GET %s (Host %s): %s %v", tc.path, tc.host, res.Status, res.Header)
			}
			var md map[string]any
			if err := json.NewDecoder(res.Body).Decode(&md); err != nil {
				t.Fatal(err)
			}
			// bearer_methods_supported stays out: its values are HTTP's (RFC 9728 §2), and an
			// empty list would say no bearer token is taken at all.
			if !reflect.DeepEqual(md, tc.want) {
				t.Errorf("metadata %v\nwant     %v", md, tc.want)
			}
		})
	}

	// A resource the issuers name is described as they accept it, also as http.resource.
	h, err = New(Config{Address: ":443", Domains: []string{"example.com"}, Resource: mailRes}, listeners, withPOP3, issuers[:1], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var md map[string]any
	if err := json.NewDecoder(get(t, h, ProtectedResourcePath).Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	if want := doc(mailRes, []any{issuer}, []any{mail, "send"}, true); !reflect.DeepEqual(md, want) {
		t.Errorf("http.resource named by an issuer: %v\nwant %v", md, want)
	}
	// The only resource at a path answers whatever the Host, as http.resource always did.
	one := []introspect.IssuerConfig{{Issuer: issuer, Resources: map[string][]string{"imap": {imapRes}}}}
	h, err = New(Config{Address: ":443", Domains: []string{"example.com"}}, listeners, withPOP3, one, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	md = nil
	if err := json.NewDecoder(get(t, h, ProtectedResourcePath).Body).Decode(&md); err != nil || md["resource"] != imapRes {
		t.Errorf("single resource, Host example.com: %v %v", md, err)
	}
}

func TestHostKey(t *testing.T) {
	for in, want := range map[string]string{
		"Mail.Example.COM":       "mail.example.com",
		"mail.example.com:443":   "mail.example.com",
		"mail.example.com.:443":  "mail.example.com",
		"mail.example.com:8443":  "mail.example.com:8443",
		"mail.example.com.:8443": "mail.example.com:8443",
		"[::1]":                  "::1",
		"[::1]:443":              "::1",
		"[::1]:8443":             "[::1]:8443",
		"":                       "",
	} {
		if got := hostKey(in); got != want {
			t.Errorf("hostKey(%q) = %q, want %q", in, got, want)
		}
	}
}
