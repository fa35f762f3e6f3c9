package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err    error
		kind   Kind
		result string
	}{
		{nil, Success, "success"},
		{&sasl.Failure{Status: sasl.StatusInvalidToken}, Refused, "invalid_token"},
		{fmt.Errorf("wrapped: %w", &sasl.Failure{Status: sasl.StatusInsufficientScope}), Refused, "insufficient_scope"},
		{&sasl.Failure{Status: sasl.StatusInvalidRequest}, Refused, "invalid_request"},
		{&sasl.Failure{Status: "something new"}, Refused, "invalid_token"},
		{fmt.Errorf("x: %w", sasl.ErrMalformed), Malformed, "malformed"},
		{&introspect.Error{Kind: introspect.ErrTemporary}, IdPUnavailable, "unavailable"},
		{fmt.Errorf("x: %w", backends.ErrRejected), BackendRefused, "backend_rejected"},
		{backends.ErrUnknownUser, BackendRefused, "backend_rejected"},
		{errRefusedRecently, BackendRefused, "backend_rejected"},
		{fmt.Errorf("x: %w", backends.ErrUnavailable), BackendUnavailable, "backend_unavailable"},
		{ErrDelayed, Delayed, "delayed"},
		{context.Canceled, Error, "error"},
	} {
		o := Classify(c.err)
		if o.Kind != c.kind || o.Result() != c.result {
			t.Errorf("Classify(%v) = %v/%q, want %v/%q", c.err, o.Kind, o.Result(), c.kind, c.result)
		}
	}
	for _, k := range []Kind{Success, Refused, Malformed, IdPUnavailable, BackendUnavailable, BackendRefused, Delayed, Error} {
		if r := (Outcome{Kind: k}).Result(); !contains(Results, r) {
			t.Errorf("%v's result %q is not in Results", k, r)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// pipeline is a Login with a validator that knows the tokens "alice" and "bob" (their
// users) and refuses anything else, a fixed secret per user, and a clock the test moves.
type pipeline struct {
	*Login
	noSecret  bool     // the backend login needs no per-user secret (master, XCLIENT)
	passToken bool     // the backend login sends the client's token
	secrets   []string // what each dial got as its secret
	now       time.Time
	logs      bytes.Buffer
	mu        sync.Mutex
	dials     map[string]int // by user
}

func newPipeline(limits Limits) *pipeline {
	p := &pipeline{now: time.Unix(1_700_000_000, 0), dials: map[string]int{}}
	now := func() time.Time { return p.now }
	p.Login = &Login{
		Validator: validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
			if r.Token == "alice" || r.Token == "bob" {
				return introspect.Identity{User: r.Token}, nil
			}
			return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInvalidToken}
		}),
		Secrets: secretsFunc(func(user string) (backends.Secret, error) { return backends.Secret("secret-of-" + user), nil }),
		Limiter: NewFailureLimiter(limits, now),
		Now:     now,
	}
	return p
}

type secretsFunc func(string) (backends.Secret, error)

func (f secretsFunc) Secret(_ context.Context, user string) (backends.Secret, error) { return f(user) }

var client = backends.Client{Addr: netip.MustParseAddrPort("192.0.2.7:40000")}

// try runs one attempt with token through the pipeline, the backend answering with dialErr,
// and returns the observed outcome.
// It does not Wait: the tests that use it look at the delays themselves.
func (p *pipeline) try(token string, dialErr error) Outcome {
	return p.attempt(false, "", token, dialErr)
}

// tryAs is try with authzid as the user the client names, after Login.Wait with a minute of
// pre-authentication time left.
func (p *pipeline) tryAs(authzid, token string, dialErr error) Outcome {
	return p.attempt(true, authzid, token, dialErr)
}

func (p *pipeline) attempt(wait bool, authzid, token string, dialErr error) Outcome {
	if p.Router == nil {
		be := backends.Config{Address: "backend.test:143", TLS: "none"}
		switch {
		case p.passToken:
			be.Login = backends.LoginToken
		case p.noSecret:
			be.Login = backends.LoginMaster
		}
		p.Router = backends.Single("imap", be)
	}
	a := &Attempt{
		Protocol: "imap", Mechanism: sasl.OAuthBearer, Client: client,
		Log: slog.New(slog.NewTextHandler(&p.logs, nil)),
		Dial: func(_ context.Context, r backends.Route, secret backends.Secret) error {
			p.mu.Lock()
			p.dials[r.User]++
			p.secrets = append(p.secrets, secret.Reveal())
			p.mu.Unlock()
			return dialErr
		},
	}
	var err error
	if wait {
		err = p.Wait(a, time.Now().Add(time.Minute), nil)
	}
	if err == nil {
		err = p.Run(context.Background(), a, sasl.Credentials{Token: token, AuthzID: authzid, CBFlag: 'n'})
	}
	return p.Finish(a, err)
}

// delay is the client address's delay, or with a user that user's from the address.
func (p *pipeline) delay(user string) time.Duration { return p.Limiter.Delay(client.Addr.Addr(), user) }

// A valid token whose backend login is refused (user not provisioned, key drift) counts as a
// failure, a login refused twice is not tried again for refusedFor, and the error is logged
// once a minute per user: before, one client made 833 backend logins a second, each an ERROR
// line.
func TestLoginBackendRefusal(t *testing.T) {
	p := newPipeline(Limits{AuthFailures: 3, AuthFailureWindow: config.Duration(time.Hour)})
	refused := fmt.Errorf("backend said NO: %w", backends.ErrRejected)
	for i := range 50 {
		if o := p.try("alice", refused); o.Kind != BackendRefused || o.Identity.User != "alice" {
			t.Fatalf("attempt %d: %v %+v, want BackendRefused for alice", i, o.Kind, o.Identity)
		}
		p.now = p.now.Add(100 * time.Millisecond)
	}
	if p.dials["alice"] != 2 {
		t.Errorf("50 attempts in 5 s reached the backend %d times, want 2 (the second refusal is remembered)", p.dials["alice"])
	}
	if d := p.delay("alice"); d <= 0 {
		t.Errorf("after 50 backend refusals the client is not delayed")
	}
	if n := strings.Count(p.logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines for one user's refusals within a minute, want 1:\n%s", n, p.logs.String())
	}
	// Another user is not answered from alice's refusal.
	if o := p.try("bob", nil); o.Kind != Success || p.dials["bob"] != 1 {
		t.Errorf("bob: %v after %d dials, want success after 1", o.Kind, p.dials["bob"])
	}
	// Once refusedFor has passed, the backend is asked again (the user may be provisioned by
	// now), and another minute brings another error line.
	p.now = p.now.Add(refusedFor + time.Minute)
	if o := p.try("alice", nil); o.Kind != Success || p.dials["alice"] != 3 {
		t.Errorf("after %v: %v with %d dials, want success on the third dial", refusedFor, o.Kind, p.dials["alice"])
	}
	p.try("alice", refused)
	if n := strings.Count(p.logs.String(), "level=ERROR"); n != 2 {
		t.Errorf("%d error lines after a minute more, want 2", n)
	}
	if strings.Contains(p.logs.String(), "secret-of-") {
		t.Errorf("the log holds a backend secret:\n%s", p.logs.String())
	}
}

// Failures decay with time only: a client mixing good tokens with bad ones stays delayed (four
// bad and one good, repeated, made 40 failures in 2 s with no delay before).
func TestLoginSuccessErasesNothing(t *testing.T) {
	p := newPipeline(Limits{AuthFailuresPerAddress: 5, AuthFailureWindow: config.Duration(10 * time.Minute)})
	var delays []time.Duration
	for range 8 {
		for range 4 {
			if o := p.try("forged", nil); o.Kind != Refused {
				t.Fatalf("forged token: %v, want Refused", o.Kind)
			}
		}
		if o := p.try("alice", nil); o.Kind != Success {
			t.Fatalf("good token: %v, want Success", o.Kind)
		}
		delays = append(delays, p.delay(""))
		p.now = p.now.Add(250 * time.Millisecond)
	}
	if delays[0] != 0 || delays[1] == 0 || delays[7] < delays[1] {
		t.Errorf("delay after each round of 4 failures and 1 success = %v; want it to start in round 2 and grow", delays)
	}
	// A quiet window forgets the address.
	p.now = p.now.Add(10*time.Minute + time.Second)
	if d := p.delay(""); d != 0 {
		t.Errorf("after a quiet window the delay is %v, want 0", d)
	}
}

// The first refusal is not remembered: the admin who fixes the user's passdb entry and retries
// at once gets in, and a success forgets the refusals of that login.
func TestLoginRefusalFixedAtOnce(t *testing.T) {
	p := newPipeline(Limits{AuthFailures: 100})
	refused := fmt.Errorf("backend said NO: %w", backends.ErrRejected)
	for round := range 3 {
		if o := p.try("alice", refused); o.Kind != BackendRefused {
			t.Fatalf("round %d: %v, want BackendRefused", round, o.Kind)
		}
		if o := p.try("alice", nil); o.Kind != Success {
			t.Fatalf("round %d: the retry after the fix: %v, want Success", round, o.Kind)
		}
	}
	if p.dials["alice"] != 6 {
		t.Errorf("%d dials, want 6: every attempt reached the backend", p.dials["alice"])
	}
}

// A login that sends no per-user secret (master, XCLIENT) refused is not remembered: the
// master credential is wrong for everyone, and the admin's fix must apply to every user at
// once. The refusals still count for the failure delay.
func TestLoginMasterRefusalNotRemembered(t *testing.T) {
	p := newPipeline(Limits{AuthFailures: 3, AuthFailureWindow: config.Duration(time.Hour)})
	p.noSecret = true
	refused := fmt.Errorf("backend said NO: %w", backends.ErrRejected)
	for range 5 {
		if o := p.try("alice", refused); o.Kind != BackendRefused {
			t.Fatalf("%v, want BackendRefused", o.Kind)
		}
	}
	if o := p.try("alice", nil); o.Kind != Success {
		t.Errorf("after the master secret was fixed: %v, want Success", o.Kind)
	}
	if p.dials["alice"] != 6 {
		t.Errorf("%d dials, want 6: every attempt reaches the backend", p.dials["alice"])
	}
	if d := p.delay("alice"); d <= 0 {
		t.Error("5 refused master logins did not delay the client")
	}
}

// Login "token" hands Dial the client's validated token as its secret and asks no
// SecretSource; a refused token login is not remembered (the backend judged that token, and
// the client's next token is another), but counts for the failure delay. It holds with
// PassToken alone, and with NoSecret too, as the front ends set them.
func TestLoginPassToken(t *testing.T) {
	for _, noSecret := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSecret=%v", noSecret), func(t *testing.T) {
			p := newPipeline(Limits{AuthFailures: 3, AuthFailureWindow: config.Duration(time.Hour)})
			p.noSecret, p.passToken = noSecret, true
			p.Secrets = secretsFunc(func(string) (backends.Secret, error) {
				t.Error("the SecretSource was asked")
				return "", errors.New("no secrets here")
			})
			refused := fmt.Errorf("backend said NO: %w", backends.ErrRejected)
			for range 5 {
				if o := p.try("alice", refused); o.Kind != BackendRefused {
					t.Fatalf("%v, want BackendRefused", o.Kind)
				}
			}
			if o := p.try("alice", nil); o.Kind != Success {
				t.Errorf("after 5 refusals: %v, want Success", o.Kind)
			}
			if p.dials["alice"] != 6 {
				t.Errorf("%d dials, want 6: every attempt reaches the backend", p.dials["alice"])
			}
			for i, s := range p.secrets {
				if s != "alice" {
					t.Errorf("dial %d got secret %q, want the client's token %q", i, s, "alice")
				}
			}
			if d := p.delay("alice"); d <= 0 {
				t.Error("5 refused token logins did not delay the client")
			}
			if !strings.Contains(p.logs.String(), "the backend validates the token itself") {
				t.Errorf("the refusal's log line does not point at the backend's own validation:\n%s", p.logs.String())
			}
		})
	}
}

// An IdP that cannot answer is not the client's failure; neither is a backend that is down.
func TestLoginTemporaryNotCounted(t *testing.T) {
	p := newPipeline(Limits{AuthFailures: 1, AuthFailuresPerAddress: 1})
	p.Validator = validatorFunc(func(introspect.Request) (introspect.Identity, error) {
		return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrTemporary}
	})
	if o := p.try("alice", nil); o.Kind != IdPUnavailable {
		t.Fatalf("IdP down: %v", o.Kind)
	}
	p.Validator = validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
		return introspect.Identity{User: r.Token}, nil
	})
	if o := p.try("alice", fmt.Errorf("dial: %w", backends.ErrUnavailable)); o.Kind != BackendUnavailable {
		t.Fatalf("backend down: %v", o.Kind)
	}
	if d := max(p.delay(""), p.delay("alice")); d != 0 {
		t.Errorf("temporary failures delayed the client %v", d)
	}
	// Unavailable is not remembered like a refusal: the next try dials again.
	p.try("alice", nil)
	if p.dials["alice"] != 2 {
		t.Errorf("%d dials, want 2", p.dials["alice"])
	}
}

// Failures count per client address and per address and user: after AuthFailures failures for
// alice, an attempt naming alice from that address is held back before its token is looked
// at, while bob from the same address (an office behind one NAT address) is not; after
// AuthFailuresPerAddress failures over several users every attempt from the address is.
func TestLoginDelayPerUser(t *testing.T) {
	p := newPipeline(Limits{AuthFailures: 2, AuthFailuresPerAddress: 5, AuthDelay: config.Duration(time.Hour), MaxAuthDelay: config.Duration(time.Hour)})
	asked := 0
	valid := p.Validator
	p.Validator = validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
		asked++
		return valid.Validate(context.Background(), r)
	})
	for range 2 {
		if o := p.tryAs("alice", "forged", nil); o.Kind != Refused {
			t.Fatalf("forged token: %v, want Refused", o.Kind)
		}
	}
	asked = 0
	if o := p.tryAs("Alice", "alice", nil); o.Kind != Delayed || asked != 0 {
		t.Errorf("alice after 2 failures: %v with the token looked at %d times, want Delayed before validation", o.Kind, asked)
	}
	if o := p.tryAs("bob", "bob", nil); o.Kind != Success {
		t.Errorf("bob from alice's address: %v, want Success", o.Kind)
	}
	for _, u := range []string{"carol", "dave", "erin"} {
		p.tryAs(u, "forged", nil)
	}
	if o := p.tryAs("bob", "bob", nil); o.Kind != Delayed {
		t.Errorf("bob after 5 failures of 4 users from his address: %v, want Delayed", o.Kind)
	}
}

// Wait serves the limiter's delay, and gives up with ErrDelayed when the delay would outlast
// the deadline or the server stops during it.
func TestLoginWait(t *testing.T) {
	l := &Login{Limiter: fixedLimiter(200 * time.Millisecond)}
	a := &Attempt{Client: client}
	start := time.Now()
	if err := l.Wait(a, time.Now().Add(time.Minute), nil); err != nil || time.Since(start) < 200*time.Millisecond {
		t.Errorf("Wait = %v after %v, want nil after 200ms", err, time.Since(start))
	}
	if err := l.Wait(a, time.Now().Add(100*time.Millisecond), nil); !errors.Is(err, ErrDelayed) {
		t.Errorf("delay past the deadline: %v, want ErrDelayed", err)
	}
	stop := make(chan struct{})
	close(stop)
	if err := l.Wait(a, time.Now().Add(time.Minute), stop); !errors.Is(err, ErrDelayed) {
		t.Errorf("stopped: %v, want ErrDelayed", err)
	}
	if err := (&Login{}).Wait(a, time.Now(), nil); err != nil {
		t.Errorf("no limiter: %v", err)
	}
}

// memberLogins records MemberLogin calls as "protocol pool member result".
type memberLogins []string

func (m *memberLogins) MemberLogin(protocol, pool, member, result string) {
	*m = append(*m, strings.Join([]string{protocol, pool, member, result}, " "))
}

// Each backend login is counted for the pool member it went to, with its result.
func TestLoginObservesMember(t *testing.T) {
	p := newPipeline(Limits{SkipAuthDelay: true})
	var got memberLogins
	p.Members = &got
	p.try("alice", nil)
	p.try("alice", fmt.Errorf("backend said NO: %w", backends.ErrRejected))
	p.try("forged", nil) // refused before any backend login
	want := memberLogins{"imap backend backend.test:143 ", "imap backend backend.test:143 rejected"}
	if !slices.Equal(got, want) {
		t.Errorf("member logins %q, want %q", got, want)
	}
}

type fixedLimiter time.Duration

func (fixedLimiter) Failed(netip.Addr, string)                {}
func (d fixedLimiter) Delay(netip.Addr, string) time.Duration { return time.Duration(d) }

// routeSource answers every user with a server of the pool, a backend user and a secret.
type routeSource struct{}

func (routeSource) Name() string { return "http" }

func (routeSource) Lookup(_ context.Context, q backends.Query) (backends.Answer, bool, error) {
	switch q.User {
	case "alice":
		return backends.Answer{Server: "backend.test:143", User: "alice.backend", Secret: "route-secret"}, true, nil
	case "bob":
		return backends.Answer{Pool: "nosuch"}, true, nil
	}
	return backends.Answer{}, false, nil
}

// The route decides the backend user and, when its source gives one, the secret: the
// SecretSource is not asked then. An unusable route is BackendUnavailable, and no dial.
func TestLoginFollowsRoute(t *testing.T) {
	p := newPipeline(Limits{})
	p.Secrets = secretsFunc(func(user string) (backends.Secret, error) {
		if user == "alice" || user == "alice.backend" {
			t.Errorf("the SecretSource was asked for %s, whose route has a secret", user)
		}
		return backends.Secret("secret-of-" + user), nil
	})
	ps, err := backends.NewPools([]backends.PoolConfig{{Name: "backend", Protocol: "imap", Config: backends.Config{TLS: "none"},
		Members: []backends.MemberConfig{{Address: "backend.test:143"}}}}, map[string]string{"imap": "backend"})
	if err != nil {
		t.Fatal(err)
	}
	p.Router = backends.NewRouter(ps, []backends.Source{routeSource{}}, backends.RoutesConfig{}, nil)
	if o := p.try("alice", nil); o.Kind != Success {
		t.Fatalf("alice: %v %v", o.Kind, o.Err)
	}
	if p.dials["alice.backend"] != 1 || p.secrets[0] != "route-secret" {
		t.Errorf("dials %v with secrets %q; want alice.backend with the route's secret", p.dials, p.secrets)
	}
	if !strings.Contains(p.logs.String(), "backend=backend.test:143 route=http backend_user=alice.backend") {
		t.Errorf("the success line does not name the route:\n%s", p.logs.String())
	}
	if o := p.try("bob", nil); o.Kind != BackendUnavailable || p.dials["bob"] != 0 {
		t.Errorf("bob, routed to a pool that does not exist: %v after %d dials, want BackendUnavailable and none", o.Kind, p.dials["bob"])
	}
}

// Two replicas' Logins sharing Refusals: a login refused twice through A is answered from
// memory by B without a dial; a success on B forgets it for both; with the store down each
// remembers alone.
func TestLoginSharedRefusals(t *testing.T) {
	refused := fmt.Errorf("backend said NO: %w", backends.ErrRejected)
	a, b := newPipeline(Limits{SkipAuthDelay: true}), newPipeline(Limits{SkipAuthDelay: true})
	b.now = a.now
	store := newFakeCounters(&a.now)
	a.Refusals, b.Refusals = store, store
	a.Limiter, b.Limiter = nil, nil
	a.try("alice", refused)
	a.try("alice", refused)
	if o := b.try("alice", nil); o.Kind != BackendRefused || b.dials["alice"] != 0 {
		t.Fatalf("B after two refusals on A: %v with %d dials, want BackendRefused from memory", o.Kind, b.dials["alice"])
	}
	a.now = a.now.Add(refusedFor)
	b.now = a.now
	if o := b.try("alice", nil); o.Kind != Success {
		t.Fatalf("B after %v: %v, want success", refusedFor, o.Kind)
	}
	a.try("alice", refused)
	if o := b.try("alice", nil); o.Kind != Success {
		t.Fatalf("one refusal on A after B's success: B %v, want success (the success forgot the count)", o.Kind)
	}
	store.down = true
	a.try("bob", refused)
	a.try("bob", refused)
	if o := a.try("bob", nil); o.Kind != BackendRefused {
		t.Errorf("store down: A's own memory gave %v, want BackendRefused", o.Kind)
	}
	if o := b.try("bob", nil); o.Kind != Success {
		t.Errorf("store down: B gave %v, want success (nothing shared)", o.Kind)
	}
}
