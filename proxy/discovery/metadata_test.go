package discovery

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/idpmeta"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fakeIdP is a MetadataFunc a test steers: down, slow (hold), or publishing other endpoints.
type fakeIdP struct {
	started      chan struct{} // receives once per read, when it begins (buffered)
	mu           sync.Mutex
	calls        int
	hold         chan struct{} // non-nil: each read waits until it is closed
	down         error
	authEndpoint string // default issuer + "/auth"
	noRegister   bool
}

func (f *fakeIdP) fetch(ctx context.Context, is introspect.IssuerConfig) (*idpmeta.Metadata, error) {
	if f.started != nil {
		f.started <- struct{}{}
	}
	f.mu.Lock()
	f.calls++
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	m := &idpmeta.Metadata{Issuer: is.Issuer, AuthorizationEndpoint: cmpOr(f.authEndpoint, is.Issuer+"/auth"), TokenEndpoint: is.Issuer + "/token"}
	if !f.noRegister {
		m.RegistrationEndpoint = is.Issuer + "/register"
	}
	return m, nil
}

func (f *fakeIdP) set(fn func(f *fakeIdP)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *fakeIdP) reads() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// syncBuffer collects log output from the handler's background reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// metaHandler builds a handler for one issuer on clk, reading metadata through idp, and
// checks that building it does not wait for the issuer.
func metaHandler(t *testing.T, clk *testClock, idp *fakeIdP, ids map[string]string) (*Handler, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	type built struct {
		h   *Handler
		err error
	}
	done := make(chan built, 1)
	go func() {
		h, err := build(Config{Address: ":443", Domains: []string{"example.com"}, PublicClientIDs: ids},
			[]proxy.ListenerConfig{{Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"}},
			protocols, []introspect.IssuerConfig{{Issuer: issuer}}, idp.fetch, slog.New(slog.NewTextHandler(logs, nil)), clk.Now)
		done <- built{h, err}
	}()
	select {
	case b := <-done:
		if b.err != nil {
			t.Fatal(b.err)
		}
		return b.h, logs
	case <-time.After(10 * time.Second):
		t.Fatal("New waits for the issuer's metadata")
		return nil, nil
	}
}

// settle waits for the issuer metadata read in flight, if any, to end.
func settle(h *Handler) {
	for _, c := range h.meta {
		c.mu.Lock()
		done := c.inflight
		c.mu.Unlock()
		if done != nil {
			<-done
		}
	}
}

// hasOAuth2 fetches the autoconfig document with ctx and reports whether it has the element.
func hasOAuth2(t *testing.T, h *Handler, ctx context.Context) bool {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, AutoconfigPath, nil).WithContext(ctx))
	if rec.Code != http.StatusOK {
		t.Fatalf("autoconfig: %d %s", rec.Code, rec.Body)
	}
	return strings.Contains(rec.Body.String(), "<oAuth2>")
}

// The issuer's endpoints are read once at start, in the background; reused for an hour; then
// refreshed behind the copy in use, which stays in use while the issuer cannot be read.
func TestIssuerMetadataCache(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)}
	idp := &fakeIdP{hold: make(chan struct{}), started: make(chan struct{}, 10)}
	h, logs := metaHandler(t, clk, idp, nil) // the IdP is slow: New did not wait
	select {
	case <-idp.started: // but it did start reading, before any client asked
	case <-time.After(10 * time.Second):
		t.Fatal("New did not start reading the issuer's metadata")
	}

	// A client that gives up before the first read ends gets the servers without the element.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if hasOAuth2(t, h, gone) {
		t.Error("oAuth2 element before the issuer answered")
	}
	close(idp.hold)
	// One that waits gets it, from the read started at New.
	if !hasOAuth2(t, h, context.Background()) {
		t.Fatalf("no oAuth2 element after the issuer answered; log:\n%s", logs)
	}
	if n := idp.reads(); n != 1 {
		t.Errorf("reads = %d, want 1 (the one New started)", n)
	}

	clk.Add(metadataTTL - time.Second)
	if !hasOAuth2(t, h, context.Background()) {
		t.Error("no oAuth2 element within the TTL")
	}
	if settle(h); idp.reads() != 1 {
		t.Errorf("within the TTL: reads = %d, want 1", idp.reads())
	}

	// Old, and the issuer is down: the last endpoints stay, the failure is logged, and the
	// issuer is asked again only after metadataRetry.
	idp.set(func(f *fakeIdP) { f.hold, f.down = nil, errors.New("503 Service Unavailable") })
	clk.Add(2 * time.Second)
	if !hasOAuth2(t, h, context.Background()) {
		t.Error("the copy in use was dropped when it got old")
	}
	settle(h)
	if n := idp.reads(); n != 2 {
		t.Errorf("reads = %d, want 2 (a refresh)", n)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="discovery: reading issuer metadata failed; the autoconfig document keeps its last known endpoints" issuer=`+issuer) ||
		!strings.Contains(logs.String(), `reason="503 Service Unavailable"`) {
		t.Errorf("log after a failed refresh:\n%s", logs)
	}
	clk.Add(metadataRetry - time.Second)
	if !hasOAuth2(t, h, context.Background()) {
		t.Error("no oAuth2 element within the retry interval")
	}
	if settle(h); idp.reads() != 2 {
		t.Errorf("within the retry interval: reads = %d, want 2", idp.reads())
	}
	idp.set(func(f *fakeIdP) { f.down = nil })
	clk.Add(time.Second)
	hasOAuth2(t, h, context.Background())
	settle(h)
	if n := idp.reads(); n != 3 {
		t.Errorf("reads = %d, want 3 (retried)", n)
	}
	if !strings.Contains(logs.String(), `level=INFO msg="discovery: issuer metadata read again`) {
		t.Errorf("no log line for the recovery:\n%s", logs)
	}
}

// An issuer that cannot be read at start leaves the element out, with a log line that says
// so, until a later read succeeds; endpoints a mail client must not open are never published.
func TestIssuerMetadataUnavailable(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)}
	idp := &fakeIdP{down: errors.New(`dial tcp: lookup idp.example.com: no such host`)}
	h, logs := metaHandler(t, clk, idp, nil)
	if hasOAuth2(t, h, context.Background()) {
		t.Error("oAuth2 element with the issuer down")
	}
	if want := `level=WARN msg="discovery: reading issuer metadata failed; the autoconfig document has no oAuth2 element for this issuer until it is read" issuer=` + issuer + ` retry=30s reason="dial tcp`; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs)
	}
	hasOAuth2(t, h, context.Background())
	if settle(h); idp.reads() != 1 {
		t.Errorf("reads = %d, want 1 within the retry interval", idp.reads())
	}
	idp.set(func(f *fakeIdP) { f.down = nil })
	clk.Add(metadataRetry)
	if !hasOAuth2(t, h, context.Background()) {
		t.Errorf("no oAuth2 element once the issuer answers; log:\n%s", logs)
	}

	for _, bad := range []string{"http://idp.example.com/auth", "javascript:alert(1)", "/auth", "https://user@idp.example.com/auth"} {
		idp := &fakeIdP{authEndpoint: bad}
		h, logs := metaHandler(t, clk, idp, nil)
		if hasOAuth2(t, h, context.Background()) {
			t.Errorf("authorization_endpoint %q published", bad)
		}
		if !strings.Contains(logs.String(), "authorization_endpoint") || !strings.Contains(logs.String(), "is not an https URL") {
			t.Errorf("authorization_endpoint %q: log:\n%s", bad, logs)
		}
	}
}

// An issuer without a registration endpoint, for which no client ID is published, works only
// for clients that bring their own client ID: said once, at the first read.
func TestIssuerMetadataNoRegistration(t *testing.T) {
	clk := &testClock{t: time.Now()}
	const note = "the issuer has no registration_endpoint and http.public_client_ids names no client for it"
	for _, tc := range []struct {
		name       string
		noRegister bool
		ids        map[string]string
		logged     bool
	}{
		{"registration endpoint", false, nil, false},
		{"neither", true, nil, true},
		{"published client ID", true, map[string]string{issuer: "mail"}, false},
	} {
		h, logs := metaHandler(t, clk, &fakeIdP{noRegister: tc.noRegister}, tc.ids)
		settle(h)
		if strings.Contains(logs.String(), note) != tc.logged || strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("%s: log:\n%s", tc.name, logs)
		}
	}
}
