package backends

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// HTTPConfig is the "http" source: nginx's mail auth_http protocol, so that a site moving
// from nginx keeps its responder.
//
// saslgate sends GET URL with the headers Auth-Method: external (the user was authenticated
// by saslgate, as nginx's EXTERNAL; there is no Auth-Pass and the token is never sent),
// Auth-SASL-Mechanism (OAUTHBEARER, XOAUTH2 or LOGIN), Auth-User, Auth-Protocol (imap, smtp,
// pop3, sieve), Auth-Login-Attempt, Auth-SSL: on, Client-IP, Client-Port, and Headers.
//
// It reads Auth-Status: "OK" routes the user to Auth-Server and Auth-Port (a host name or
// address and a port), or, a saslgate extension, to the pool named by Auth-Pool; Auth-User
// and Auth-Pass give the backend user and its secret, both optional. "OK" with neither
// server nor pool means the responder does not route this user (the next source is asked).
// Any other status refuses the user: the login fails as a backend refusal, or as a temporary
// failure when Auth-Error-Code is a 4xx code or Auth-Wait is present. Anything else than a
// 200 answer with Auth-Status is a failed lookup.
type HTTPConfig struct {
	URL string `yaml:"url"`
	// Headers are sent with every request (nginx's auth_http_header), e.g. a shared secret.
	Headers map[string]string `yaml:"headers"`
	// CAFile is a PEM file of CA certificates trusted for an https URL in addition to the
	// system roots.
	CAFile string `yaml:"ca_file"`
}

// Validate names every problem of the section.
func (c HTTPConfig) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("http: url: required"))
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		errs = append(errs, fmt.Errorf("http: url: %q is not an http or https URL", c.URL))
	}
	for k, v := range c.Headers {
		if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("http: headers: %q is not a valid header", k))
		}
	}
	if c.CAFile != "" && u != nil && u.Scheme != "https" {
		errs = append(errs, errors.New("http: ca_file: only used with an https url"))
	}
	return errors.Join(errs...)
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

type httpSource struct {
	cfg    HTTPConfig
	client *http.Client
}

// maxHTTPAnswer bounds what is read of a responder's body (headers are bounded by net/http).
const maxHTTPAnswer = 64 << 10

// NewHTTPSource returns the auth_http source of c.
func NewHTTPSource(c HTTPConfig) (Source, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxResponseHeaderBytes = 64 << 10
	t.MaxIdleConnsPerHost = 64
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("http: ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http: ca_file %s: no PEM certificates found", c.CAFile)
		}
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	client := &http.Client{
		Transport: t,
		// A responder that redirects is misconfigured; following it could send the user's
		// name somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &httpSource{cfg: c, client: client}, nil
}

func (*httpSource) Name() string { return "http" }

func (s *httpSource) Lookup(ctx context.Context, q Query) (Answer, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL, nil)
	if err != nil {
		return Answer{}, false, err
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	h := req.Header
	h.Set("Auth-Method", "external")
	h.Set("Auth-SASL-Mechanism", q.Mechanism)
	h.Set("Auth-User", q.User)
	h.Set("Auth-Protocol", q.Protocol)
	h.Set("Auth-Login-Attempt", strconv.Itoa(max(q.Attempt, 1)))
	h.Set("Auth-SSL", "on")
	if q.Client.Addr.IsValid() {
		h.Set("Client-IP", q.Client.Addr.Addr().Unmap().String())
		h.Set("Client-Port", strconv.Itoa(int(q.Client.Addr.Port())))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Answer{}, false, fmt.Errorf("http: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHTTPAnswer))
	return parseAuthHTTP(resp.StatusCode, resp.Header)
}

// parseAuthHTTP reads an auth_http answer (HTTPConfig).
func parseAuthHTTP(code int, h http.Header) (Answer, bool, error) {
	if code != http.StatusOK {
		return Answer{}, false, fmt.Errorf("http: responder answered %d, want 200 with Auth-Status", code)
	}
	get := func(k string) (string, error) {
		vs := h[textproto.CanonicalMIMEHeaderKey(k)]
		switch {
		case len(vs) > 1:
			return "", fmt.Errorf("http: responder sent %s %d times", k, len(vs))
		case len(vs) == 0:
			return "", nil
		case strings.ContainsFunc(vs[0], isControl):
			return "", fmt.Errorf("http: responder's %s has control characters", k)
		}
		return strings.TrimSpace(vs[0]), nil
	}
	status, err := get("Auth-Status")
	if err != nil {
		return Answer{}, false, err
	}
	if status == "" {
		return Answer{}, false, errors.New("http: responder's answer has no Auth-Status")
	}
	if status != "OK" {
		code, _ := get("Auth-Error-Code")
		_, wait := h[textproto.CanonicalMIMEHeaderKey("Auth-Wait")]
		msg := fmt.Sprintf("backends: http route responder refused the user: Auth-Status %q", sanitize(status))
		if strings.HasPrefix(code, "4") || wait {
			return Answer{}, false, &loginError{kind: ErrUnavailable, msg: msg + " (temporary)"}
		}
		return Answer{}, false, &loginError{kind: ErrRouteRefused, msg: msg}
	}
	var a Answer
	var errs []error
	for _, f := range []struct {
		key string
		to  *string
	}{{"Auth-Pool", &a.Pool}, {"Auth-User", &a.User}} {
		v, err := get(f.key)
		errs = append(errs, err)
		*f.to = v
	}
	server, err := get("Auth-Server")
	errs = append(errs, err)
	port, err := get("Auth-Port")
	errs = append(errs, err)
	pass, err := get("Auth-Pass")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return Answer{}, false, err
	}
	a.Secret = Secret(pass)
	switch {
	case server != "" && port == "":
		return Answer{}, false, errors.New("http: responder sent Auth-Server without Auth-Port")
	case server == "" && port != "":
		return Answer{}, false, errors.New("http: responder sent Auth-Port without Auth-Server")
	case server != "":
		if strings.ContainsAny(server, ":[]") {
			// An IPv6 address, or a host with a port: Auth-Port carries the port.
			if ip := net.ParseIP(strings.Trim(server, "[]")); ip == nil {
				return Answer{}, false, fmt.Errorf("http: responder's Auth-Server %q is not a host name or address", sanitize(server))
			}
		}
		a.Server = net.JoinHostPort(strings.Trim(server, "[]"), port)
	}
	if a.Server == "" && a.Pool == "" {
		return Answer{}, false, nil
	}
	return a, true, nil
}
