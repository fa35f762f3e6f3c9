package main

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/discovery"
)

// Protocol names in the file are the registry's: a section of another protocol is an unknown
// key, with its line, as is a misspelt key inside a protocol section; a listener of another
// protocol is refused, naming those served.
func TestConfigProtocolNames(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string
	}{
		{"section of an unregistered protocol", "log: {level: info}\nnntp:\n  backend: {address: \"127.0.0.1:119\", tls: none}\n",
			[]string{"line 2", "field nntp not found in type main.fileConfig"}},
		{"misspelt key in a protocol section", "imap:\n  backend: {address: \"127.0.0.1:143\", tls: none}\n  preauth_timeuot: 1m\n",
			[]string{"line 3", "preauth_timeuot"}},
		{"listener of an unregistered protocol", `
tls: {cert_file: c.pem, key_file: k.pem}
listeners:
  - {name: nntps, protocol: nntp, address: "127.0.0.1:563", tls: implicit}
secrets: {source: hmac, hmac_key_file: key}
tokens:
  issuers:
    - {issuer: "https://idp.example.com", audience: [saslgate]}
`, append([]string{`listeners[0].protocol "nntp" is not supported`}, protocolNames()...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tc.text))
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "struct {") {
				t.Errorf("error names the decoder's built type:\n%v", err)
			}
		})
	}
}

// Each registered protocol has one name everywhere: its listeners' protocol, its section's
// key and its errors' field path, an issuer's scope key, its readiness check, discovery's
// announcement, and the metrics' protocol label. The file below uses every registered
// protocol.
func TestRegisteredProtocolsAreConsistent(t *testing.T) {
	fileKeys := map[string]bool{}
	ft := reflect.TypeFor[fileConfig]()
	for i := range ft.NumField() {
		if name, _, _ := strings.Cut(ft.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fileKeys[name] = true
		}
	}
	seen := map[string]bool{}
	for _, p := range protocols {
		switch {
		case p.Name == "" || strings.ToLower(p.Name) != p.Name:
			t.Errorf("protocol name %q: want a lowercase name", p.Name)
		case seen[p.Name]:
			t.Errorf("protocol %q is registered twice", p.Name)
		case fileKeys[p.Name]:
			t.Errorf("protocol %q is also a key of the configuration file", p.Name)
		}
		seen[p.Name] = true
		if p.NewSection == nil || p.NewServer == nil {
			t.Fatalf("protocol %q lacks NewSection or NewServer", p.Name)
		}
		if err := p.NewSection().Validate(); err == nil || !strings.HasPrefix(err.Error(), p.Name+".") {
			t.Errorf("protocol %q: an empty section's errors are named %v; want the prefix %q", p.Name, err, p.Name+".")
		}
	}

	var b strings.Builder
	b.WriteString("tls: {cert_file: c.pem, key_file: k.pem}\nsecrets: {source: hmac, hmac_key_file: key}\n")
	b.WriteString("http: {address: \"127.0.0.1:0\", domains: [example.com]}\nlisteners:\n")
	for _, p := range protocols {
		fmt.Fprintf(&b, "  - {name: %s-in, protocol: %s, address: \"127.0.0.1:0\", tls: implicit, public_host: mail.example.com}\n", p.Name, p.Name)
	}
	for _, p := range protocols {
		fmt.Fprintf(&b, "%s:\n  backend: {address: \"%s.backend.test:1\", tls: none}\n", p.Name, p.Name)
	}
	b.WriteString("tokens:\n  issuers:\n    - issuer: https://idp.example.com\n      audience: [saslgate]\n      scopes:\n")
	for _, p := range protocols {
		fmt.Fprintf(&b, "        %s: [%s-scope]\n", p.Name, p.Name)
	}
	cfg, err := loadConfig(writeConfig(t, b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if !slices.Equal(cfg.Tokens.Protocols, protocolNames()) {
		t.Errorf("tokens.Protocols = %q, want the registry's %q", cfg.Tokens.Protocols, protocolNames())
	}
	scopes := cfg.Tokens.Issuers[0].RequiredScopes()
	var ready []string
	router, err := newRouter(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range readyChecks(router.Pools(), &live{}) {
		ready = append(ready, c.Name)
	}
	h, err := discovery.New(cfg.HTTP, cfg.Listeners, protocols, cfg.Tokens.Issuers, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Labels{Mechanisms: proxy.Mechanisms, Results: proxy.Results})
	for _, l := range cfg.Listeners {
		observer(m, l).Accepted()
	}
	labels := map[string]string{} // listener → protocol, from the metrics
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			var listener, protocol string
			for _, lp := range mt.GetLabel() {
				switch lp.GetName() {
				case "listener":
					listener = lp.GetValue()
				case "protocol":
					protocol = lp.GetValue()
				}
			}
			if listener != "" && protocol != "" {
				labels[listener] = protocol
			}
		}
	}

	for _, p := range protocols {
		backend := p.Name + ".backend.test:1"
		if s := cfg.Sections[p.Name]; s == nil || sectionBackend(cfg, p.Name).Address != backend {
			t.Errorf("section %q: %+v, want its backend %s", p.Name, s, backend)
		}
		if !slices.Contains(scopes, p.Name+"-scope") {
			t.Errorf("scopes %q lack %s's", scopes, p.Name)
		}
		if want := p.Name + " pool backend member " + backend; !slices.Contains(ready, want) {
			t.Errorf("readiness checks %q lack %q", ready, want)
		}
		if want := p.Name + " mail.example.com:"; (p.Autoconfig != "") != strings.Contains(h.String(), want) {
			t.Errorf("discovery announces %q; protocol %q has autoconfig %q", h.String(), p.Name, p.Autoconfig)
		}
		if got := labels[p.Name+"-in"]; got != p.Name {
			t.Errorf("listener %s-in has the metrics label protocol=%q, want %q", p.Name, got, p.Name)
		}
	}
}
