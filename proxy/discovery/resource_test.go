package discovery

import (
	"encoding/json"
	"net/http"
	"reflect"
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
