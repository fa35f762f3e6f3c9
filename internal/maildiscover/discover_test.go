package maildiscover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/saslgate/saslgate/internal/probe"
)

const alice = "alice@example.com"

// site is a test web server standing in for every host of the domain (virtual hosts by the
// Host header), the way Discoverer.Base reaches it, and for the issuer ("self"). Requests are
// logged as "host path".
type site struct {
	srv   *httptest.Server
	mu    sync.Mutex
	docs  map[string]string // "host path" → body
	asked []string
}

func newSite(t *testing.T) *site {
	s := &site{docs: map[string]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *site) serve(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if "http://"+host == s.srv.URL {
		host = "self" // asked directly, not through Base
	}
	key := host + " " + r.URL.Path
	s.mu.Lock()
	s.asked = append(s.asked, key)
	body, ok := s.docs[key]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(strings.ReplaceAll(body, "$SITE", s.srv.URL)))
}

func (s *site) discoverer(log *strings.Builder) *Discoverer {
	return &Discoverer{Base: s.srv.URL, HTTPClient: s.srv.Client(), Log: log}
}

const imapOnly = `<clientConfig version="1.1"><emailProvider id="example.com"><domain>example.com</domain>
<incomingServer type="imap"><hostname>imap.example.com</hostname><port>993</port><socketType>SSL</socketType><authentication>OAuth2</authentication><username>%EMAILADDRESS%</username></incomingServer>
<outgoingServer type="smtp"><hostname>smtp.example.com</hostname><port>587</port><socketType>STARTTLS</socketType><authentication>password-cleartext</authentication><authentication>OAuth2</authentication><username>%EMAILLOCALPART%</username></outgoingServer>
<incomingServer type="pop3"><hostname>pop.example.com</hostname><port>995</port><socketType>SSL</socketType><authentication>password-cleartext</authentication></incomingServer>
</emailProvider>OAUTH2</clientConfig>`

func withOAuth2(inner string) string {
	return strings.Replace(imapOnly, "OAUTH2", "<oAuth2>"+inner+"</oAuth2>", 1)
}

func TestDiscoverAutoconfigAndResource(t *testing.T) {
	s := newSite(t)
	s.docs["autoconfig.example.com /mail/config-v1.1.xml"] = withOAuth2(`<issuer>$SITE/idp</issuer><scope>openid email offline_access</scope><authURL>$SITE/idp/auth</authURL><tokenURL>$SITE/idp/token</tokenURL><clientID>mail-app</clientID>`)
	s.docs["imap.example.com /.well-known/oauth-protected-resource"] = `{"resource":"https://imap.example.com","authorization_servers":["$SITE/idp"],"scopes_supported":["email"]}`
	var log strings.Builder
	res, err := s.discoverer(&log).Discover(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(log.String())
	want := []Server{
		{Type: TypeIMAP, Host: "imap.example.com", Port: 993, TLS: probe.TLSImplicit, Username: alice},
		{Type: TypeSMTP, Host: "smtp.example.com", Port: 587, TLS: probe.TLSStartTLS, Username: "alice"},
	}
	if fmt.Sprint(res.Servers) != fmt.Sprint(want) {
		t.Errorf("servers %+v, want %+v", res.Servers, want)
	}
	iss := s.srv.URL + "/idp"
	if res.Issuer != iss || res.IssuerSource != SourceAutoconfig || strings.Join(res.Scopes, " ") != "openid email offline_access" ||
		res.ClientID != "mail-app" || res.AuthURL != iss+"/auth" || res.TokenURL != iss+"/token" {
		t.Errorf("result %+v", res)
	}
	if res.Resource != "https://imap.example.com" || res.ResourceSource != SourceRFC9728 {
		t.Errorf("resource %q from %q", res.Resource, res.ResourceSource)
	}
	for _, line := range []string{
		"discover: autoconfig: trying https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=alice%40example.com\n",
		"discover: autoconfig: found servers with OAuth: imaps://imap.example.com:993 submission://smtp.example.com:587 (1 other servers left out",
		"discover: WebFinger: skipped: the issuer is known (autoconfig)\n",
		"discover: RFC 9728: resource https://imap.example.com, authorization servers " + iss,
		"discover: SASL: skipped: the issuer is known (autoconfig)\n",
		"discover: result: issuer " + iss + " (from autoconfig)\n",
	} {
		if !strings.Contains(log.String(), line) {
			t.Errorf("log lacks %q", line)
		}
	}
	if s.asked[0] != "autoconfig.example.com /mail/config-v1.1.xml" || len(s.asked) != 2 {
		t.Errorf("asked %q", s.asked)
	}
}

func TestDiscoverEachStepAlone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		docs    map[string]string
		servers []Server
		probe   func(probe.Options) (*probe.Result, error)
		issuer  string // relative to the site
		source  string
		res     string
		resFrom string
		asked   []string // in order, the requests made
	}{
		{
			name:   "autoconfig at the well-known URL with a bare host issuer",
			docs:   map[string]string{"example.com /.well-known/autoconfig/mail/config-v1.1.xml": withOAuth2(`<issuer>login.example.com</issuer><scope>IMAP SMTP</scope>`)},
			issuer: "https://login.example.com", source: SourceAutoconfig,
			res: "https://imap.example.com", resFrom: SourceDerived,
			asked: []string{"autoconfig.example.com /mail/config-v1.1.xml", "example.com /.well-known/autoconfig/mail/config-v1.1.xml", "imap.example.com /.well-known/oauth-protected-resource", "smtp.example.com /.well-known/oauth-protected-resource"},
		},
		{
			name:   "WebFinger",
			docs:   map[string]string{"example.com /.well-known/webfinger": `{"subject":"acct:alice@example.com","links":[{"rel":"http://openid.net/specs/connect/1.0/issuer","href":"$SITE/wf"}]}`},
			issuer: "/wf", source: SourceWebFinger,
			asked: []string{"autoconfig.example.com /mail/config-v1.1.xml", "example.com /.well-known/autoconfig/mail/config-v1.1.xml", "example.com /.well-known/webfinger", "example.com /.well-known/oauth-protected-resource"},
		},
		{
			name:    "RFC 9728 of a given server",
			servers: []Server{{Type: TypeIMAP, Host: "127.0.0.1", Port: 993, TLS: probe.TLSImplicit}},
			docs:    map[string]string{"127.0.0.1 /.well-known/oauth-protected-resource": `{"resource":"https://127.0.0.1","authorization_servers":["$SITE/rs"]}`},
			issuer:  "/rs", source: SourceRFC9728, res: "https://127.0.0.1", resFrom: SourceRFC9728,
			asked: []string{"autoconfig.example.com /mail/config-v1.1.xml", "example.com /.well-known/autoconfig/mail/config-v1.1.xml", "example.com /.well-known/webfinger", "127.0.0.1 /.well-known/oauth-protected-resource"},
		},
		{
			name:    "SASL error challenge",
			servers: []Server{{Type: TypeIMAP, Host: "127.0.0.1", Port: 993, TLS: probe.TLSImplicit}},
			docs:    map[string]string{"self /sasl/.well-known/openid-configuration": `{"issuer":"$SITE/sasl"}`},
			probe: func(o probe.Options) (*probe.Result, error) {
				if o.Address != "127.0.0.1:993" || o.Mechanism != "OAUTHBEARER" || o.User != alice || o.Token == "" {
					return nil, fmt.Errorf("probe options %+v", o)
				}
				return &probe.Result{Challenge: []byte(`{"status":"invalid_token","scope":"email","openid-configuration":"$SITE/sasl/.well-known/openid-configuration"}`)}, probe.ErrAuthFailed
			},
			issuer: "/sasl", source: SourceSASL, res: "https://127.0.0.1", resFrom: SourceDerived,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t)
			for k, v := range tc.docs {
				s.docs[k] = v
			}
			var log strings.Builder
			d := s.discoverer(&log)
			d.Servers = tc.servers
			if tc.probe != nil {
				d.Probe = func(_ context.Context, o probe.Options) (*probe.Result, error) {
					r, err := tc.probe(o)
					if r != nil {
						r.Challenge = []byte(strings.ReplaceAll(string(r.Challenge), "$SITE", s.srv.URL))
					}
					return r, err
				}
			} else {
				d.Probe = func(context.Context, probe.Options) (*probe.Result, error) {
					t.Error("probed although the issuer was known")
					return nil, errors.New("no")
				}
			}
			res, err := d.Discover(context.Background(), alice)
			t.Log(log.String())
			if err != nil {
				t.Fatal(err)
			}
			iss := tc.issuer
			if strings.HasPrefix(iss, "/") {
				iss = s.srv.URL + iss
			}
			if res.Issuer != iss || res.IssuerSource != tc.source || res.Resource != tc.res || res.ResourceSource != tc.resFrom {
				t.Errorf("issuer %q (%s), resource %q (%s); want %q (%s), %q (%s)", res.Issuer, res.IssuerSource, res.Resource, res.ResourceSource, iss, tc.source, tc.res, tc.resFrom)
			}
			if tc.asked != nil && strings.Join(s.asked, "\n") != strings.Join(tc.asked, "\n") {
				t.Errorf("asked:\n%s\nwant:\n%s", strings.Join(s.asked, "\n"), strings.Join(tc.asked, "\n"))
			}
		})
	}
}

func TestDiscoverNothing(t *testing.T) {
	s := newSite(t)
	var log strings.Builder
	res, err := s.discoverer(&log).Discover(context.Background(), alice)
	if err != nil || res.Issuer != "" || res.Servers != nil || res.Resource != "" {
		t.Fatalf("%+v, %v", res, err)
	}
	for _, want := range []string{"404 Not Found", "MX lookup (3.1) skipped", "discover: SASL: no mail server known (no autoconfig document); give --server", "discover: result: no issuer found for alice@example.com"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	for _, bad := range []string{"alice", "@example.com", "alice@localhost", "alice@[::1]", "al ice@example.com", "alice@exa/mple.com"} {
		if _, err := s.discoverer(&log).Discover(context.Background(), bad); err == nil {
			t.Errorf("%q taken for an address", bad)
		}
	}
}

func TestDiscoverGivenIssuerAndResource(t *testing.T) {
	s := newSite(t)
	s.docs["autoconfig.example.com /mail/config-v1.1.xml"] = withOAuth2(`<issuer>https://other.example</issuer>`)
	var log strings.Builder
	d := s.discoverer(&log)
	d.SkipIssuer, d.SkipResource = true, true
	res, err := d.Discover(context.Background(), alice)
	if err != nil || res.Issuer != "" || res.Resource != "" || len(res.Servers) != 2 || res.ClientID != "" {
		t.Fatalf("%+v, %v", res, err)
	}
	if len(s.asked) != 1 || !strings.Contains(log.String(), "discover: WebFinger: skipped: the issuer is given") {
		t.Errorf("asked %q\n%s", s.asked, log.String())
	}
}

// transport serves every request, https included, from a handler: hosts by their names.
type transport struct{ h http.Handler }

func (tr transport) RoundTrip(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	tr.h.ServeHTTP(w, r)
	return w.Result(), nil
}

func TestDiscoverThroughMX(t *testing.T) {
	s := newSite(t)
	s.docs["autoconfig.hoster.example.net /mail/config-v1.1.xml"] = withOAuth2(`<issuer>https://id.hoster.example.net</issuer>`)
	client := &http.Client{Transport: transport{http.HandlerFunc(s.serve)}}
	mx := func(_ context.Context, name string) ([]*net.MX, error) {
		if name != "example.com" {
			return nil, fmt.Errorf("MX of %s", name)
		}
		return []*net.MX{{Host: "backup.other.example.org.", Pref: 20}, {Host: "mx1.hoster.example.net.", Pref: 10}}, nil
	}
	var asked string
	var log strings.Builder
	d := &Discoverer{HTTPClient: client, LookupMX: mx, Log: &log, Confirm: func(q string) bool { asked = q; return true },
		Probe: func(context.Context, probe.Options) (*probe.Result, error) { return nil, errors.New("no") }}
	res, err := d.Discover(context.Background(), alice)
	t.Log(log.String())
	if err != nil || res.Issuer != "https://id.hoster.example.net" || len(res.Servers) != 2 {
		t.Fatalf("%+v, %v", res, err)
	}
	if !strings.Contains(asked, "autoconfig.hoster.example.net") || !strings.Contains(asked, "mx1.hoster.example.net") || !strings.Contains(asked, "not authenticated") {
		t.Errorf("question %q", asked)
	}
	// Not confirmed (or no one to ask): an error naming what to give instead.
	d.Confirm = nil
	if _, err := d.Discover(context.Background(), alice); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Errorf("unconfirmed: %v", err)
	}
	// An http issuer is not taken without Base; an https→http redirect is refused.
	s.docs["autoconfig.example.com /mail/config-v1.1.xml"] = withOAuth2(`<issuer>http://id.example.com</issuer>`)
	log.Reset()
	if res, err := d.Discover(context.Background(), alice); err != nil || res.Issuer != "" || !strings.Contains(log.String(), "oAuth2 issuer not usable") {
		t.Errorf("http issuer: %+v, %v\n%s", res, err, log.String())
	}
	s.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://plain.example.com/x.xml", http.StatusFound)
	})
	client.Transport = transport{s.srv.Config.Handler}
	log.Reset()
	d.LookupMX = func(context.Context, string) ([]*net.MX, error) { return nil, nil }
	if _, err := d.Discover(context.Background(), alice); err != nil || !strings.Contains(log.String(), "redirect from https to http://plain.example.com/x.xml refused") {
		t.Errorf("redirect: %v\n%s", err, log.String())
	}
}

func TestParseAutoconfigSamples(t *testing.T) {
	ac, err := ParseAutoconfig([]byte(draftSample), alice)
	if err != nil || len(ac.Servers) != 0 || ac.Others != 4 || ac.OAuth2 == nil || ac.OAuth2.Issuer != "login.example.com" || ac.OAuth2.ClientID != "open" ||
		ac.OAuth2.Scope != "IMAP POP3 SMTP CalDAV CardDAV WebDAV offline_access" || IssuerURL(ac.OAuth2.Issuer) != "https://login.example.com" {
		t.Errorf("draft sample: %+v, %+v, %v", ac, ac.OAuth2, err)
	}
	ac, err = ParseAutoconfig([]byte(gatewaySample), alice)
	if err != nil || len(ac.Servers) != 4 || ac.Servers[0].Username != "alice" || ac.Servers[2].URL() != "submissions://mail.example.com:465" ||
		ac.Servers[3].URL() != "sieve://mail.example.com:4190" || ac.OAuth2.Issuer != "https://id.example.com/realms/mail" {
		t.Errorf("saslgate's document: %+v, %v", ac, err)
	}
	if _, err := ParseAutoconfig([]byte(`<html><body>Not found</body></html>`), alice); err == nil {
		t.Error("an HTML page taken for an autoconfig document")
	}
	for _, u := range []string{"https://id.example.com", "https://id.example.com/realms/mail"} {
		if err := CheckIssuer(u, false); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://id.example.com", "https://id.example.com/?x=1", "https://id.example.com#f", "https://u@id.example.com", "id.example.com", "https://"} {
		if err := CheckIssuer(u, false); err == nil {
			t.Errorf("%s accepted as an issuer", u)
		}
	}
	if _, err := url.Parse(IssuerURL("login.example.com")); err != nil {
		t.Error(err)
	}
}

func TestParseWebFinger(t *testing.T) {
	for i, want := range []string{"https://openid.example.com", "https://id.example.com/realms/mail", "", "", "", "error"} {
		got, err := ParseWebFinger([]byte(webfingerSeeds[i]))
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("%s: %q, want %q", webfingerSeeds[i], got, want)
		}
	}
}

func TestSASLProbeNeedsTLS(t *testing.T) {
	s := newSite(t)
	var log strings.Builder
	d := s.discoverer(&log)
	d.Servers = []Server{{Type: TypeIMAP, Host: "127.0.0.1", Port: 143, TLS: probe.TLSNone}}
	d.Probe = func(context.Context, probe.Options) (*probe.Result, error) {
		t.Error("probed a server without TLS: anyone on the way could answer with their issuer")
		return nil, errors.New("no")
	}
	if res, err := d.Discover(context.Background(), alice); err != nil || res.Issuer != "" || !strings.Contains(log.String(), "discover: SASL: imap://127.0.0.1:143 skipped: no TLS") {
		t.Errorf("%+v, %v\n%s", res, err, log.String())
	}
}

func TestBareHostIssuerNamedInFull(t *testing.T) {
	// The draft's sample names the issuer by host; the resource's metadata names it whole.
	s := newSite(t)
	s.docs["autoconfig.example.com /mail/config-v1.1.xml"] = withOAuth2(`<issuer>id.example.com</issuer>`)
	s.docs["imap.example.com /.well-known/oauth-protected-resource"] = `{"resource":"https://imap.example.com","authorization_servers":["https://other.example","https://id.example.com/realms/mail"]}`
	var log strings.Builder
	res, err := s.discoverer(&log).Discover(context.Background(), alice)
	if err != nil || res.Issuer != "https://id.example.com/realms/mail" || res.IssuerSource != SourceAutoconfig {
		t.Errorf("%+v, %v\n%s", res, err, log.String())
	}
}
