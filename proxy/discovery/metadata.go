package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/saslgate/saslgate/internal/idpmeta"
	"github.com/saslgate/saslgate/introspect"
)

// How an issuer's endpoints are kept: reused for metadataTTL and then refreshed behind the copy
// in use; while the issuer cannot be read, asked again every metadataRetry (the last known
// endpoints stay in use); each read bounded by metadataDeadline.
const (
	metadataTTL      = time.Hour
	metadataRetry    = 30 * time.Second
	metadataDeadline = 10 * time.Second
)

// MetadataFunc reads an issuer's metadata (authorization and token endpoints); see
// idpmeta.Fetch.
type MetadataFunc func(ctx context.Context, is introspect.IssuerConfig) (*idpmeta.Metadata, error)

// metaCache holds one issuer's metadata. Reads happen in the background, never more than one
// at a time: the first at start, later ones when a request finds the copy old. Only a
// request that finds nothing known yet waits for the read in flight.
type metaCache struct {
	issuer   introspect.IssuerConfig
	fetch    MetadataFunc
	clientID string // what http.public_client_ids publishes for the issuer, "" for none
	log      *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	m        *idpmeta.Metadata // last usable metadata; nil until one was read
	next     time.Time         // when to read again
	failing  bool              // the last read failed (logged once per failure)
	inflight chan struct{}     // closed when the running read ends; nil when none runs
}

// get returns the usable metadata, nil while none is known. With none known it waits for the
// read in flight, until ctx ends; otherwise it never waits.
func (c *metaCache) get(ctx context.Context) *idpmeta.Metadata {
	c.mu.Lock()
	if c.inflight == nil && !c.now().Before(c.next) {
		c.start()
	}
	m, done := c.m, c.inflight
	c.mu.Unlock()
	if m != nil || done == nil {
		return m
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m
}

// start begins a read in the background; c.mu is held.
func (c *metaCache) start() {
	done := make(chan struct{})
	c.inflight = done
	go c.read(done)
}

func (c *metaCache) read(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), metadataDeadline)
	defer cancel()
	m, err := c.fetch(ctx, c.issuer)
	if err == nil {
		err = usable(m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(done)
	c.inflight = nil
	now := c.now()
	if err != nil {
		c.next = now.Add(metadataRetry)
		if c.m != nil {
			c.log.Warn("discovery: reading issuer metadata failed; the autoconfig document keeps its last known endpoints",
				"issuer", c.issuer.Issuer, "retry", metadataRetry, "reason", err)
		} else {
			c.log.Warn("discovery: reading issuer metadata failed; the autoconfig document has no oAuth2 element for this issuer until it is read",
				"issuer", c.issuer.Issuer, "retry", metadataRetry, "reason", err)
		}
		c.failing = true
		return
	}
	switch {
	case c.failing:
		c.log.Info("discovery: issuer metadata read again; the autoconfig document names its endpoints", "issuer", c.issuer.Issuer)
	case c.m == nil && m.RegistrationEndpoint == "" && c.clientID == "":
		// draft-ietf-mailmaint-autoconfig, "OAuth2 requirements": without a published client
		// ID, clients register themselves.
		c.log.Info("discovery: the issuer has no registration_endpoint and http.public_client_ids names no client for it: only mail clients that bring their own client ID can sign in",
			"issuer", c.issuer.Issuer)
	}
	c.m, c.next, c.failing = m, now.Add(metadataTTL), false
}

// usable checks what the autoconfig document passes on: both endpoints, as URLs a mail client
// may open.
func usable(m *idpmeta.Metadata) error {
	if m == nil {
		return errors.New("no metadata")
	}
	var errs []error
	for _, e := range [...]struct{ name, url string }{
		{"authorization_endpoint", m.AuthorizationEndpoint},
		{"token_endpoint", m.TokenEndpoint},
	} {
		if !publishable(e.url) {
			errs = append(errs, fmt.Errorf("%s %.256q is not an https URL", e.name, e.url))
		}
	}
	return errors.Join(errs...)
}

// publishable reports whether an endpoint may be handed to mail clients: an absolute https
// URL, or http on a loopback host (the demo and tests, as introspect accepts for issuers).
func publishable(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		return host == "localhost" || ip != nil && ip.IsLoopback()
	}
	return false
}
