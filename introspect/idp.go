package introspect

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// maxResponseSize bounds every answer read from an identity provider.
const maxResponseSize = 1 << 20

// idpClient makes every request to one identity provider, bounded in time (the issuer's
// Timeout, which includes waiting for a slot), in concurrency (MaxConcurrentRequests) and in
// response size.
type idpClient struct {
	client  *http.Client // metadata and JWK Set: redirects followed, never from https to http
	direct  *http.Client // introspection and userinfo: they carry the token and the client secret, so no redirects
	sem     chan struct{}
	timeout time.Duration
	issuer  string
	obs     Observer // nil: nothing observed
}

func newIDPClient(base *http.Client, ic IssuerConfig) (*idpClient, error) {
	c, err := newHTTPClient(base, ic)
	if err != nil {
		return nil, err
	}
	direct := *c
	direct.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &idpClient{
		client:  c,
		direct:  &direct,
		sem:     make(chan struct{}, max(ic.MaxConcurrentRequests, 1)),
		timeout: ic.Timeout.Or(DefaultTimeout),
		issuer:  ic.Issuer,
	}, nil
}

// response is an answer read in full.
type response struct {
	status      int
	contentType string
	body        []byte
}

// request is do, reported to the Observer as a request of kind (IdPDiscovery, …).
func (c *idpClient) request(ctx context.Context, hc *http.Client, req *http.Request, kind string) (*response, error) {
	resp, err := c.do(ctx, hc, req)
	if c.obs != nil {
		failed := err != nil
		if resp != nil && resp.status >= 400 {
			// RFC 6750 §3.1: a userinfo endpoint refusing the token is its verdict, not a failure.
			refusal := kind == IdPUserinfo && (resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden)
			failed = !refusal
		}
		c.obs.ObserveIdPRequest(c.issuer, kind, failed)
	}
	return resp, err
}

// do sends req with hc once a request slot is free, within the issuer's timeout.
func (c *idpClient) do(ctx context.Context, hc *http.Client, req *http.Request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	case <-ctx.Done():
		return nil, fmt.Errorf("introspect: %s %s: no free request slot (max_concurrent_requests): %w", req.Method, req.URL.Redacted(), ctx.Err())
	}
	resp, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("introspect: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("introspect: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	if len(body) > maxResponseSize {
		return nil, fmt.Errorf("introspect: %s %s: response larger than %d bytes", req.Method, req.URL.Redacted(), maxResponseSize)
	}
	return &response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}, nil
}

// getJSON reads a metadata document or JWK Set (kind IdPDiscovery or IdPJWKS).
func (c *idpClient) getJSON(ctx context.Context, url, kind string, v any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("introspect: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.request(ctx, c.client, req, kind)
	if err != nil {
		return err
	}
	if resp.status != http.StatusOK {
		return fmt.Errorf("introspect: GET %s: %d %s", url, resp.status, http.StatusText(resp.status))
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		return fmt.Errorf("introspect: GET %s: %v", url, err)
	}
	return nil
}

// members parses an introspection or userinfo answer: a JSON object (RFC 7662 §2.2, OIDC Core
// §5.3.2), served as JSON. Anything else (an HTML error page from a proxy, a signed userinfo
// JWT) is the provider misbehaving, so a temporary failure.
func (r *response) members(what string) (map[string]json.RawMessage, *Error) {
	if r.contentType != "" {
		mt, _, err := mime.ParseMediaType(r.contentType)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, temporary(fmt.Sprintf("%s response is %.40q, not JSON", what, r.contentType), nil)
		}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &m); err != nil || m == nil {
		return nil, temporary(what+" response is not a JSON object", err)
	}
	return m, nil
}

// isJSONTrue and isJSONFalse compare a raw JSON value with the literals; a json.Unmarshal into a
// bool would take null for false.
func isJSONTrue(raw json.RawMessage) bool  { return bytes.Equal(raw, []byte("true")) }
func isJSONFalse(raw json.RawMessage) bool { return bytes.Equal(raw, []byte("false")) }

// endpoint is the URL of an issuer's introspection or userinfo endpoint: configured, or read
// from the issuer's metadata on first use (RFC 8414 §2, OIDC Discovery 1.0 §3), with backoff
// while that fails.
type endpoint struct {
	member       string // the metadata member naming it, e.g. "introspection_endpoint"
	issuer       string
	discoveryURL string
	http         *idpClient
	now          func() time.Time
	log          *slog.Logger

	flight singleflight.Group

	mu       sync.Mutex
	url      string // configured or discovered; "" until known
	next     time.Time
	failures int
	lastErr  error
}

func (e *endpoint) get(ctx context.Context) (string, *Error) {
	e.mu.Lock()
	u, next, lastErr := e.url, e.next, e.lastErr
	e.mu.Unlock()
	if u != "" {
		return u, nil
	}
	if e.now().Before(next) {
		return "", temporary("identity provider unavailable, retrying later", lastErr)
	}
	ch := e.flight.DoChan("", func() (any, error) {
		u, err := e.discover(context.WithoutCancel(ctx))
		now := e.now()
		e.mu.Lock()
		defer e.mu.Unlock()
		if err != nil {
			e.failures++
			e.next, e.lastErr = now.Add(backoff(e.failures)), err
			e.log.Warn("introspect: reading issuer metadata failed", "issuer", e.issuer,
				"failures", e.failures, "retry_in", e.next.Sub(now), "err", err)
			return nil, err
		}
		e.url, e.failures, e.lastErr = u, 0, nil
		return u, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", temporary("identity provider unavailable", r.Err)
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", temporary("validation abandoned", ctx.Err())
	}
}

func (e *endpoint) discover(ctx context.Context) (string, error) {
	var doc map[string]json.RawMessage
	if err := e.http.getJSON(ctx, e.discoveryURL, IdPDiscovery, &doc); err != nil {
		return "", err
	}
	var iss, u string
	json.Unmarshal(doc["issuer"], &iss)
	if iss != e.issuer {
		return "", fmt.Errorf("introspect: metadata at %s names issuer %q, want %q", e.discoveryURL, iss, e.issuer)
	}
	if json.Unmarshal(doc[e.member], &u) != nil || u == "" {
		return "", fmt.Errorf("introspect: metadata at %s has no %s (configure it)", e.discoveryURL, e.member)
	}
	if err := checkURL(u); err != nil {
		return "", fmt.Errorf("introspect: metadata %s: %v", e.member, err)
	}
	return u, nil
}

// NewHTTPClient returns the HTTP client the validator uses for issuer ic: its ca_file,
// insecure_skip_verify and timeout, and no https→http redirects. The tools (`saslgate check`,
// `login`, the discovery listener) use it to talk to the issuer the way the gateway does.
func NewHTTPClient(ic IssuerConfig) (*http.Client, error) { return newHTTPClient(nil, ic) }

// newHTTPClient returns the client for one issuer (errors name the config field): a copy of base (WithHTTPClient) or one with
// the issuer's TLS settings, always with a timeout and without https→http redirects.
func newHTTPClient(base *http.Client, ic IssuerConfig) (*http.Client, error) {
	var c http.Client
	if base != nil {
		c = *base
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if ic.CAFile != "" || ic.InsecureSkipVerify {
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: ic.InsecureSkipVerify}
		}
		if ic.CAFile != "" {
			pem, err := os.ReadFile(ic.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_file %s: no PEM certificates found", ic.CAFile)
			}
			t.TLSClientConfig.RootCAs = pool
		}
		c.Transport = t
	}
	if c.Timeout == 0 {
		c.Timeout = ic.Timeout.Or(DefaultTimeout)
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return errors.New("introspect: refusing redirect from https to " + req.URL.Scheme)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("introspect: stopped after 10 redirects")
		}
		return nil
	}
	return &c, nil
}
