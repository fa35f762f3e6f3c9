package maildiscover

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/probe"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// Where a Result's issuer and resource came from.
const (
	SourceGiven      = "given"
	SourceAutoconfig = "autoconfig"
	SourceWebFinger  = "WebFinger"
	SourceRFC9728    = "RFC 9728"
	SourceSASL       = "SASL error challenge"
	SourceDerived    = "derived from the mail server's host name"
)

// Timeouts of one HTTP request and one SASL probe.
const (
	requestTimeout = 10 * time.Second
	probeTimeout   = 10 * time.Second
)

// probeToken is what the SASL step sends as its token: not a token, so any server refuses it
// and answers with its error challenge.
const probeToken = "saslgate-login-discovery"

// Discoverer finds an account's servers and issuer. The zero value plus Log is usable.
type Discoverer struct {
	// HTTPClient fetches the documents (default http.DefaultClient). Redirects from https to
	// http are refused.
	HTTPClient *http.Client
	// Base, when set, is for tests: every https://HOST/PATH discovery URL is fetched from
	// Base/PATH instead, with "Host: HOST", so one test server stands in for every host of a
	// domain; issuer URLs may then be http; the MX step is skipped. Never for real accounts:
	// it gives up the TLS check of every discovery document.
	Base string
	// Servers, when set, are the mail servers to use instead of the autoconfig document's
	// (saslgate login --server).
	Servers []Server
	// SkipIssuer: the issuer is known; only the servers and the resource are looked for.
	SkipIssuer bool
	// SkipResource: the resource is known; no RFC 9728 request is made for it.
	SkipResource bool
	// TLSConfig is used (cloned) for the SASL probes: the roots that verify mail servers.
	TLSConfig *tls.Config
	// LookupMX resolves the domain's MX records (default net.DefaultResolver.LookupMX).
	LookupMX func(ctx context.Context, name string) ([]*net.MX, error)
	// Probe runs one SASL probe (default probe.Run).
	Probe func(ctx context.Context, o probe.Options) (*probe.Result, error)
	// Confirm asks the user whether to use a configuration found through DNS only (the
	// draft's "User approval"); nil refuses such configurations.
	Confirm func(question string) bool
	// Log receives one line per attempt and finding (default: discarded).
	Log io.Writer
}

// Result is what discovery found out.
type Result struct {
	Address string
	Domain  string
	// Servers are the account's mail servers, most preferred first; nil when the domain
	// publishes no autoconfig document and none were given.
	Servers []Server
	// Issuer is the issuer identifier, "" when no step found one.
	Issuer       string
	IssuerSource string
	// DiscoveryURL is the issuer's metadata URL when a step named one (the SASL challenge's
	// openid-configuration).
	DiscoveryURL string
	// Scopes to ask for, when a step said (autoconfig scope, RFC 9728 scopes_supported, the
	// challenge's scope).
	Scopes []string
	// From the autoconfig oAuth2 element, for its issuer only: the draft lets the client skip
	// metadata and registration with them.
	ClientID, ClientSecret string
	AuthURL, TokenURL      string
	// Resource is the RFC 8707 resource indicator for the mail servers, "" when unknown.
	Resource       string
	ResourceSource string

	// bareIssuer is the autoconfig issuer when it was a bare host name (the draft's sample
	// form), which an authorization server of the RFC 9728 metadata may name in full.
	bareIssuer string
}

// Discover runs the steps for address (user@domain) until it knows the issuer, and looks
// for the servers and the resource on the way. Not finding an issuer is not an error:
// Result.Issuer is then empty.
func (d *Discoverer) Discover(ctx context.Context, address string) (*Result, error) {
	local, domain, ok := strings.Cut(address, "@")
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ok || local == "" || strings.ContainsAny(local, "\x00\r\n/ ") || !validHost(domain) || net.ParseIP(domain) != nil || !strings.Contains(domain, ".") {
		return nil, fmt.Errorf("maildiscover: %q is not an email address like alice@example.com", address)
	}
	if d.Base != "" {
		if u, err := url.Parse(d.Base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("maildiscover: discovery base %q: want an http(s) URL", d.Base)
		}
		d.logf("testing", "every https discovery URL is fetched from %s with its host in the Host header; http issuers are accepted; no MX lookup", d.Base)
	}
	res := &Result{Address: address, Domain: domain}
	if err := d.autoconfig(ctx, res); err != nil {
		return nil, err
	}
	if len(d.Servers) > 0 {
		res.Servers = d.Servers
		d.logf("servers", "using the servers given: %s", serverList(res.Servers))
	}
	d.webfinger(ctx, res)
	d.protectedResource(ctx, res)
	d.sasl(ctx, res)
	if res.Resource == "" && !d.SkipResource && len(res.Servers) > 0 {
		// saslgate's http.resource form (proxy/discovery): https and the public host name.
		res.Resource, res.ResourceSource = "https://"+hostPort(res.Servers[0].Host, ""), SourceDerived
	}
	switch {
	case res.Issuer != "":
		d.logf("result", "issuer %s (from %s)", res.Issuer, res.IssuerSource)
	case !d.SkipIssuer:
		d.logf("result", "no issuer found for %s", address)
	}
	if res.Resource != "" {
		d.logf("result", "resource %s (%s)", res.Resource, res.ResourceSource)
	}
	return res, nil
}

// autoconfig runs the draft's "Mail provider" URLs 1.1 and 1.2, then "MX" 3.1.
func (d *Discoverer) autoconfig(ctx context.Context, res *Result) error {
	q := "?emailaddress=" + url.QueryEscape(res.Address)
	urls := []string{
		"https://autoconfig." + res.Domain + "/mail/config-v1.1.xml" + q,
		"https://" + res.Domain + "/.well-known/autoconfig/mail/config-v1.1.xml",
	}
	for _, u := range urls {
		if ac := d.fetchAutoconfig(ctx, u, res.Address); ac != nil {
			d.useAutoconfig(res, ac)
			return nil
		}
	}
	d.logf("autoconfig", "not trying http://autoconfig.%s (1.3): plain http can be altered on the way, and the ISPDB (2.1) knows big providers, not this site", res.Domain)
	if d.Base != "" {
		d.logf("autoconfig", "MX lookup (3.1) skipped: discovery base set")
		return nil
	}
	lookup := d.LookupMX
	if lookup == nil {
		lookup = net.DefaultResolver.LookupMX
	}
	ctx2, cancel := context.WithTimeout(ctx, requestTimeout)
	mxs, err := lookup(ctx2, res.Domain)
	cancel()
	if err != nil || len(mxs) == 0 {
		d.logf("autoconfig", "MX lookup of %s: %v", res.Domain, cmpErr(err, "no MX record"))
		return nil
	}
	best := slices.MinFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	mxHost := strings.ToLower(strings.TrimSuffix(best.Host, "."))
	_, full, ok := strings.Cut(mxHost, ".")
	if !ok || !strings.Contains(full, ".") || full == res.Domain {
		d.logf("autoconfig", "MX host %s gives no other domain to ask", mxHost)
		return nil
	}
	// 3.1 with the path of 1.1: the draft's 3.1 names /.well-known/mail-v1.xml, a path no
	// retrieval step of its own and no server we know uses. 3.2 (the MX host's registrable
	// domain) needs the public suffix list and is not tried.
	u := "https://autoconfig." + full + "/mail/config-v1.1.xml" + q
	ac := d.fetchAutoconfig(ctx, u, res.Address)
	if ac == nil {
		return nil
	}
	// Security considerations, DNS: a configuration found through an unauthenticated MX
	// record is used only when the user confirms it.
	question := fmt.Sprintf("The mail settings for %s come from %s, found through the MX record %s (DNS, not authenticated): servers %s; issuer %s. Use them?",
		res.Domain, hostOf(u), mxHost, serverList(ac.Servers), issuerOf(ac))
	if d.Confirm == nil || !d.Confirm(question) {
		return fmt.Errorf("maildiscover: the configuration found through the MX record of %s (%s) was not confirmed; pass --server and --issuer to name the servers yourself", res.Domain, mxHost)
	}
	d.useAutoconfig(res, ac)
	return nil
}

func issuerOf(ac *Autoconfig) string {
	if ac.OAuth2 == nil || ac.OAuth2.Issuer == "" {
		return "not named"
	}
	return ac.OAuth2.Issuer
}

// fetchAutoconfig returns the document at u, nil when there is none (said on the log).
func (d *Discoverer) fetchAutoconfig(ctx context.Context, u, address string) *Autoconfig {
	d.logf("autoconfig", "trying %s", u)
	body, err := d.get(ctx, u, "application/xml, text/xml")
	if err != nil {
		d.logf("autoconfig", "%v", err)
		return nil
	}
	ac, err := ParseAutoconfig(body, address)
	if err != nil {
		d.logf("autoconfig", "%v", err)
		return nil
	}
	return ac
}

func (d *Discoverer) useAutoconfig(res *Result, ac *Autoconfig) {
	if len(ac.Domains) > 0 && !slices.ContainsFunc(ac.Domains, func(s string) bool { return strings.EqualFold(s, res.Domain) }) {
		d.logf("autoconfig", "warning: the document is for %s, not %s", strings.Join(ac.Domains, ", "), res.Domain)
	}
	res.Servers = ac.Servers
	msg := "found servers with OAuth: " + serverList(ac.Servers)
	if ac.Others > 0 {
		msg += fmt.Sprintf(" (%d other servers left out: other types or authentication)", ac.Others)
	}
	d.logf("autoconfig", "%s", msg)
	o := ac.OAuth2
	if o == nil || o.Issuer == "" {
		d.logf("autoconfig", "no oAuth2 element with an issuer")
		return
	}
	issuer := IssuerURL(o.Issuer)
	if err := CheckIssuer(issuer, d.Base != ""); err != nil {
		d.logf("autoconfig", "oAuth2 issuer not usable: %v", err)
		return
	}
	d.logf("autoconfig", "oAuth2: issuer %s, scope %q, client ID %s", issuer, o.Scope, cmpStr(o.ClientID, "not named (dynamic registration)"))
	if d.SkipIssuer {
		return
	}
	res.Issuer, res.IssuerSource = issuer, SourceAutoconfig
	if !strings.Contains(o.Issuer, "://") {
		res.bareIssuer = o.Issuer
	}
	res.Scopes = strings.Fields(o.Scope)
	res.ClientID, res.ClientSecret = o.ClientID, o.ClientSecret
	for _, e := range []struct{ from, to *string }{{&o.AuthURL, &res.AuthURL}, {&o.TokenURL, &res.TokenURL}} {
		if *e.from != "" && CheckIssuer(*e.from, d.Base != "") == nil {
			*e.to = *e.from
		}
	}
}

// webfinger asks the domain for the issuer of acct:address (OpenID Connect Discovery 1.0 §2).
func (d *Discoverer) webfinger(ctx context.Context, res *Result) {
	if d.skipIssuer("WebFinger", res) {
		return
	}
	u := "https://" + res.Domain + "/.well-known/webfinger?resource=" + url.QueryEscape("acct:"+res.Address) + "&rel=" + url.QueryEscape(IssuerRel)
	d.logf("WebFinger", "trying %s", u)
	body, err := d.get(ctx, u, "application/jrd+json, application/json")
	if err != nil {
		d.logf("WebFinger", "%v", err)
		return
	}
	iss, err := ParseWebFinger(body)
	switch {
	case err != nil:
		d.logf("WebFinger", "%v", err)
	case iss == "":
		d.logf("WebFinger", "no link of relation %s", IssuerRel)
	case CheckIssuer(iss, d.Base != "") != nil:
		d.logf("WebFinger", "%v", CheckIssuer(iss, d.Base != ""))
	default:
		d.logf("WebFinger", "issuer %s", iss)
		res.Issuer, res.IssuerSource = iss, SourceWebFinger
	}
}

// protectedResource reads the RFC 9728 metadata of the mail servers' resource: https and
// each server's host name, else the domain.
func (d *Discoverer) protectedResource(ctx context.Context, res *Result) {
	if d.SkipResource && (d.SkipIssuer || res.Issuer != "") {
		return
	}
	var hosts []string
	for _, s := range res.Servers {
		if !slices.Contains(hosts, s.Host) {
			hosts = append(hosts, s.Host)
		}
	}
	if len(hosts) == 0 {
		hosts = []string{res.Domain}
	}
	for _, h := range hosts {
		resource := "https://" + hostPort(h, "")
		// RFC 9728 §3.1: the well-known path goes between the host and the (here empty) path.
		u := resource + "/.well-known/oauth-protected-resource"
		d.logf("RFC 9728", "trying %s", u)
		body, err := d.get(ctx, u, "application/json")
		if err != nil {
			d.logf("RFC 9728", "%v", err)
			continue
		}
		m, err := ParseResourceMetadata(body, resource)
		if err != nil {
			d.logf("RFC 9728", "%v", err)
			continue
		}
		d.logf("RFC 9728", "resource %s, authorization servers %s, scopes %q", m.Resource, strings.Join(m.AuthorizationServers, " "), strings.Join(m.ScopesSupported, " "))
		if !d.SkipResource {
			res.Resource, res.ResourceSource = m.Resource, SourceRFC9728
		}
		if res.Scopes == nil {
			res.Scopes = m.ScopesSupported
		}
		if d.SkipIssuer {
			return
		}
		if res.bareIssuer != "" {
			// A bare host cannot say the issuer's scheme or path; an authorization server of
			// the resource on that host can.
			for _, as := range m.AuthorizationServers {
				if u, err := url.Parse(as); err == nil && strings.EqualFold(u.Host, res.bareIssuer) && as != res.Issuer && CheckIssuer(as, d.Base != "") == nil {
					d.logf("RFC 9728", "the autoconfig issuer %s is %s", res.bareIssuer, as)
					res.Issuer = as
					break
				}
			}
		}
		if res.Issuer != "" {
			if !slices.Contains(m.AuthorizationServers, res.Issuer) {
				d.logf("RFC 9728", "warning: the resource does not list the issuer %s from %s; keeping it", res.Issuer, res.IssuerSource)
			}
			return
		}
		for _, iss := range m.AuthorizationServers {
			if err := CheckIssuer(iss, d.Base != ""); err != nil {
				d.logf("RFC 9728", "%v", err)
				continue
			}
			res.Issuer, res.IssuerSource = iss, SourceRFC9728
			return
		}
		return
	}
}

// sasl probes the mail servers with a token that is none, for the error challenge's
// openid-configuration (RFC 7628 §3.2.2).
func (d *Discoverer) sasl(ctx context.Context, res *Result) {
	if d.skipIssuer("SASL", res) {
		return
	}
	servers := res.Servers
	if len(servers) == 0 {
		if d.Base != "" {
			d.logf("SASL", "no mail server known (no autoconfig document); give --server")
			return
		}
		// The host names mail clients guess first.
		for _, h := range []string{res.Domain, "imap." + res.Domain, "mail." + res.Domain} {
			servers = append(servers, Server{Type: TypeIMAP, Host: h, Port: 993, TLS: probe.TLSImplicit})
		}
		d.logf("SASL", "no mail server known; guessing %s", serverList(servers))
	}
	run := d.Probe
	if run == nil {
		run = probe.Run
	}
	for _, s := range servers {
		if s.TLS == probe.TLSNone {
			d.logf("SASL", "%s skipped: no TLS, so its answer could come from anyone on the way", s.URL())
			continue
		}
		d.logf("SASL", "probing %s with OAUTHBEARER and a token that is none", s.URL())
		r, err := run(ctx, probe.Options{Target: s.Target(), TLSConfig: d.TLSConfig, Mechanism: sasl.OAuthBearer, User: res.Address, Token: probeToken, Timeout: probeTimeout})
		if r == nil || r.Challenge == nil {
			d.logf("SASL", "no error challenge: %v", cmpErr(err, "the server accepted a token that is none"))
			continue
		}
		c, err := ParseChallenge(r.Challenge)
		if err != nil || c.OpenIDConfiguration == "" {
			d.logf("SASL", "the challenge %q names no openid-configuration", r.Challenge)
			continue
		}
		if err := CheckIssuer(c.OpenIDConfiguration, d.Base != ""); err != nil {
			d.logf("SASL", "openid-configuration %q: not an https URL", c.OpenIDConfiguration)
			continue
		}
		iss, err := d.metadataIssuer(ctx, c.OpenIDConfiguration)
		if err != nil {
			d.logf("SASL", "%v", err)
			continue
		}
		d.logf("SASL", "openid-configuration %s names issuer %s", c.OpenIDConfiguration, iss)
		res.Issuer, res.IssuerSource, res.DiscoveryURL = iss, SourceSASL, c.OpenIDConfiguration
		if res.Scopes == nil {
			res.Scopes = strings.Fields(c.Scope)
		}
		return
	}
}

// metadataIssuer reads the issuer a metadata document names.
func (d *Discoverer) metadataIssuer(ctx context.Context, u string) (string, error) {
	body, err := d.get(ctx, u, "application/json")
	if err != nil {
		return "", err
	}
	var m struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return "", fmt.Errorf("maildiscover: %s: %v", u, err)
	}
	if err := CheckIssuer(m.Issuer, d.Base != ""); err != nil {
		return "", err
	}
	return m.Issuer, nil
}

func (d *Discoverer) skipIssuer(step string, res *Result) bool {
	switch {
	case d.SkipIssuer:
		d.logf(step, "skipped: the issuer is given")
	case res.Issuer != "":
		d.logf(step, "skipped: the issuer is known (%s)", res.IssuerSource)
	default:
		return false
	}
	return true
}

// get fetches u (through Base when set) and returns the body of a 200 answer.
func (d *Discoverer) get(ctx context.Context, u, accept string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	target, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("maildiscover: %v", err)
	}
	host := ""
	if d.Base != "" && target.Scheme == "https" {
		base, _ := url.Parse(d.Base)
		host = target.Host
		target.Scheme, target.Host = base.Scheme, base.Host
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("maildiscover: %v", err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Accept", accept)
	c := *cmpClient(d.HTTPClient)
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		if via[0].URL.Scheme == "https" && r.URL.Scheme != "https" {
			return fmt.Errorf("redirect from https to %s refused", r.URL.Redacted())
		}
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, maxDocument)
	}
	return body, nil
}

func (d *Discoverer) logf(step, format string, args ...any) {
	if d.Log != nil {
		fmt.Fprintf(d.Log, "discover: %s: %s\n", step, fmt.Sprintf(format, args...))
	}
}

func cmpClient(c *http.Client) *http.Client {
	if c == nil {
		return http.DefaultClient
	}
	return c
}

func cmpStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpErr(err error, def string) string {
	if err == nil {
		return def
	}
	return err.Error()
}

func serverList(ss []Server) string {
	if len(ss) == 0 {
		return "none"
	}
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.URL()
	}
	return strings.Join(parts, " ")
}

// hostPort brackets IPv6 literals; port "" leaves the port out.
func hostPort(host, port string) string {
	if port != "" {
		return net.JoinHostPort(host, port)
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Host
	}
	return u
}
