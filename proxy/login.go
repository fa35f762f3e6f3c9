package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// Login is the login pipeline every front end shares: the failed-authentication delay, token
// validation and policy (Authorize), the route to the user's backend, the user's backend
// secret, the backend login, the limiter's bookkeeping and one observation of the outcome. A
// front end parses the client's bytes into an Attempt and sasl.Credentials and answers the
// Outcome from its own table; it holds no step of the sequence itself.
//
// A Login is safe for concurrent use; its zero value is not usable (Validator and Router are
// required).
type Login struct {
	Validator Validator
	// Router finds the backend server of each user (pools, route sources).
	Router *backends.Router
	// Secrets gives the users' backend secrets; nil only if no route needs one.
	Secrets SecretSource
	// Limiter delays the answers to clients that keep failing; nil: no delay.
	Limiter AuthLimiter
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Refusals, when set, shares the memory of refused backend logins between replicas: a
	// login refused twice through any of them is answered from memory by all. Its keys hold
	// a SHA-256 of the protocol, user and refused secret, never the secret. Each use falls
	// back to this Login's own memory when the store does not answer.
	Refusals Counters
	// Members, when set, counts each backend login by the pool member it went to (metrics).
	Members MemberObserver

	refusals refusalMemory
	logs     userLogLimiter
}

// Attempt is one authentication attempt on one connection: what the front end knows, and how
// it logs in to its backend.
type Attempt struct {
	Protocol  string // the front end's Protocol.Name, for scopes, routes and metrics
	Mechanism string // OAUTHBEARER, XOAUTH2 or LOGIN (token as password)
	Listener  ListenerConfig
	Conn      Conn            // the client's TLS state: channel binding, bound tokens
	Client    backends.Client // the client's address (PROXY header's, behind a balancer)
	Log       *slog.Logger    // the connection's logger (nil: discard)
	Observer  Observer        // the listener's observer (nil: none)
	// Number is the connection's authentication attempt, from 1 (0 counts as 1); route
	// sources may see it (auth_http's Auth-Login-Attempt).
	Number int
	// Dial logs in to the route's server as route.User with secret: the user's backend
	// secret, the route's, the client's token (login "token"), or "" for the logins that
	// need none. The front end keeps the session it opens. Its errors wrap
	// backends.ErrUnavailable or backends.ErrRejected.
	Dial func(ctx context.Context, route backends.Route, secret backends.Secret) error

	identity introspect.Identity // what Run validated, for Finish
	route    backends.Route      // where Run sent the login, for Finish
	deadline time.Time           // Wait's: the end of the pre-authentication time
	stop     <-chan struct{}     // Wait's: closed at shutdown
	waited   time.Duration       // the delay Wait held the attempt back for
}

// Route is where Run sent the login (zero before it got there).
func (a *Attempt) Route() backends.Route { return a.route }

// refusedFor is how long a (user, secret) pair the backend refused twice is answered from
// memory. Long enough that a client retrying in a loop does not reach the backend at each try
// (12,498 backend logins in 15 s from one client before), short enough that provisioning the
// user fixes the login within a minute. The first refusal is not remembered, so the retry of
// an admin who has just fixed the user's passdb entry goes through at once.
const refusedFor = 30 * time.Second

// Wait holds back an attempt from a client address that keeps failing (the Limiter), before
// anything of the attempt is looked at, so a success cannot be told apart sooner than a
// failure. It returns ErrDelayed when the delay would outlast deadline or stop closes first.
// Run holds the attempt back further, the same way, once its SASL message names a user who
// keeps failing from that address.
func (l *Login) Wait(a *Attempt, deadline time.Time, stop <-chan struct{}) error {
	a.deadline, a.stop, a.waited = deadline, stop, 0
	if l.Limiter == nil {
		return nil
	}
	return a.hold(l.Limiter.Delay(a.Client.Addr.Addr(), ""))
}

// hold waits until the attempt has been held back for d in all.
func (a *Attempt) hold(d time.Duration) error {
	d -= a.waited
	if d <= 0 {
		return nil
	}
	if a.Observer != nil && a.waited == 0 {
		a.Observer.AuthDelayed()
	}
	if a.deadline.IsZero() || time.Until(a.deadline) < d {
		return ErrDelayed
	}
	a.waited += d
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-a.stop:
		return ErrDelayed
	}
}

// limitedUser is the user an attempt's failures are counted for: the one the client names
// (OAUTHBEARER's authzid, XOAUTH2's user), else the validated token's.
func limitedUser(c sasl.Credentials, id introspect.Identity) string {
	if c.AuthzID != "" {
		return c.AuthzID
	}
	return id.User
}

// Run checks one SASL message's credentials and logs in to the backend. A refusal the client
// caused is returned as its *sasl.Failure (so the mechanism sends the RFC 7628 error
// challenge); anything else is an error that Classify sorts. Run does the limiter's
// bookkeeping; Finish observes the attempt once its exchange is over.
func (l *Login) Run(ctx context.Context, a *Attempt, c sasl.Credentials) error {
	ip := a.Client.Addr.Addr()
	if l.Limiter != nil && c.AuthzID != "" {
		// The name is the client's claim, known before the token is looked at: holding the
		// attempt back for it tells a guesser nothing about the token.
		if err := a.hold(l.Limiter.Delay(ip, c.AuthzID)); err != nil {
			return err
		}
	}
	id, err := Authorize(ctx, l.Validator, a.Listener, a.Conn, a.Protocol, c)
	a.identity = id
	failed := func() {
		if l.Limiter != nil {
			l.Limiter.Failed(ip, limitedUser(c, id))
		}
	}
	if err != nil {
		if errors.As(err, new(*sasl.Failure)) {
			failed()
		}
		return err
	}
	route, err := l.Router.Route(ctx, backends.Query{
		Protocol: a.Protocol, User: id.User, Mechanism: a.Mechanism, Client: a.Client, Attempt: max(a.Number, 1),
	})
	if err != nil {
		return err
	}
	a.route = route
	var secret backends.Secret
	cfg := route.Config
	switch {
	case cfg.PassesToken():
		secret = backends.Secret(c.Token)
	case !cfg.NeedsUserSecret():
	case route.Secret != "":
		secret = route.Secret
	default:
		if secret, err = l.Secrets.Secret(ctx, route.User); err != nil {
			failed()
			return err
		}
	}
	// Only a per-user secret's refusal is remembered: it is the pair (user, secret) that is
	// wrong. A master or XCLIENT login refused is the master credential's fault or the
	// backend's, and an admin's fix of it must apply at once to every user; a token the
	// backend refuses is its own validation's verdict on that token, which the next token
	// does not share. The failure delay bounds such retries.
	remember := cfg.NeedsUserSecret()
	var key [32]byte
	var inStore bool // the shared memory may hold key: forget it there on success
	if remember {
		key = refusalKey(a.Protocol, route.User, secret)
	}
	if remember && l.refused(key, &inStore) {
		failed()
		return errRefusedRecently
	}
	start := time.Now()
	err = a.Dial(ctx, route, secret)
	if a.Observer != nil {
		a.Observer.BackendLogin(time.Since(start), BackendResult(err))
	}
	l.ObserveMember(a.Protocol, route, err)
	switch {
	case err == nil && remember:
		l.forgetRefusal(key, inStore)
	case errors.Is(err, backends.ErrRejected):
		// A good token whose backend login is refused counts as a failure too; otherwise one
		// client has the backend check a wrong secret as fast as it can ask (833/s before).
		if remember {
			l.addRefusal(key)
		}
		failed()
	}
	return err
}

// errRefusedRecently is the cause of a BackendRefused outcome answered from memory.
var errRefusedRecently = fmt.Errorf("%w (moments ago; not asked again yet)", backends.ErrRejected)

// BackendResult is the BackendLogin observation's result label: "" for success.
func BackendResult(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, backends.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, backends.ErrRejected):
		return "rejected"
	case errors.Is(err, backends.ErrUnknownUser):
		return "unknown_user"
	}
	return "error"
}

// Finish classifies how the attempt's exchange ended (err is what the mechanism or the front
// end ended it with; nil is success) and observes it once: the audit log line and the metric.
// A backend refusal is logged at error level, at most once a minute per user, since an admin
// has to act on it.
func (l *Login) Finish(a *Attempt, err error) Outcome {
	o := Classify(err)
	o.Identity = a.identity
	if a.Observer != nil {
		a.Observer.Authenticated(a.Mechanism, o.Result())
	}
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	attrs := []any{"outcome", o.Result(), "mech", a.Mechanism}
	if o.Identity.User != "" {
		attrs = append(attrs, "user", o.Identity.User)
	}
	if r := a.route; r.Config.Address != "" {
		attrs = append(attrs, "backend", r.Config.Address, "route", r.Source)
		if r.User != o.Identity.User {
			attrs = append(attrs, "backend_user", r.User)
		}
	}
	switch o.Kind {
	case Success:
		log.Info("authentication", append(attrs, "issuer", o.Identity.Issuer)...)
	case Refused, Malformed:
		log.Info("authentication", append(attrs, "reason", err)...)
	case IdPUnavailable, Delayed:
		log.Warn("authentication", append(attrs, "reason", err)...)
	case BackendRefused:
		if l.logs.allow(o.Identity.User, l.now()) {
			msg := "backend refused the login of a valid token; provision the user or fix the secret"
			if a.route.Config.PassesToken() {
				msg = "backend refused the login of a valid token; the backend validates the token itself: check that it trusts the same issuer and maps the same user"
			}
			log.Error(msg, append(attrs, "reason", err)...)
		}
	default:
		log.Error("authentication", append(attrs, "reason", err)...)
	}
	return o
}

func (l *Login) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// refused reports whether the login key was refused twice moments ago, by the shared memory
// or, when it does not answer, by this Login's. inStore is set unless the store said it has
// no such key, so that a success costs no store call in the common case.
func (l *Login) refused(key [32]byte, inStore *bool) bool {
	if l.Refusals != nil {
		n, err := l.Refusals.Count(context.Background(), refusalStoreKey(key))
		*inStore = err != nil || n > 0
		if err == nil && n >= 2 {
			return true
		}
	}
	return l.refusals.has(key, l.now())
}

func (l *Login) addRefusal(key [32]byte) {
	l.refusals.add(key, l.now())
	if l.Refusals != nil {
		l.Refusals.Incr(context.Background(), refusalStoreKey(key), refusedFor)
	}
}

func (l *Login) forgetRefusal(key [32]byte, inStore bool) {
	l.refusals.forget(key)
	if l.Refusals != nil && inStore {
		l.Refusals.Delete(context.Background(), refusalStoreKey(key))
	}
}

func refusalStoreKey(key [32]byte) string { return "refused:" + hex.EncodeToString(key[:]) }

// refusalKey identifies a (protocol, user, secret) login; the secret is hashed, never kept.
func refusalKey(protocol, user string, secret backends.Secret) [32]byte {
	h := sha256.New()
	h.Write([]byte(protocol))
	h.Write([]byte{0})
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(secret.Reveal()))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// maxRefusals bounds the memory of refused logins; when full, expired entries go first, then
// all of them (a flood of distinct refused users is itself answered by the limiter).
const maxRefusals = 10000

// refusalMemory remembers backend-refused logins: a pair refused twice, each within
// refusedFor of the last, is answered from memory until refusedFor after the last refusal.
type refusalMemory struct {
	mu sync.Mutex
	m  map[[32]byte]refusals
}

type refusals struct {
	count int
	last  time.Time
}

func (r *refusalMemory) has(k [32]byte, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[k]
	return ok && e.count >= 2 && now.Sub(e.last) < refusedFor
}

func (r *refusalMemory) add(k [32]byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[[32]byte]refusals)
	}
	e, ok := r.m[k]
	if !ok && len(r.m) >= maxRefusals {
		for k, e := range r.m {
			if now.Sub(e.last) >= refusedFor {
				delete(r.m, k)
			}
		}
		if len(r.m) >= maxRefusals {
			clear(r.m)
		}
	}
	if now.Sub(e.last) >= refusedFor {
		e.count = 0
	}
	r.m[k] = refusals{count: e.count + 1, last: now}
}

func (r *refusalMemory) forget(k [32]byte) {
	r.mu.Lock()
	delete(r.m, k)
	r.mu.Unlock()
}

// userLogLimiter lets one line per user be logged per minute.
type userLogLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (u *userLogLimiter) allow(user string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.last[user]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if u.last == nil || len(u.last) >= 10000 {
		u.last = make(map[string]time.Time)
	}
	u.last[user] = now
	return true
}

// Observer receives one listener's events: internal/metrics implements it, and front ends
// call it for the events that are theirs (connections, sessions, bytes).
type Observer interface {
	Accepted()
	Refused(reason string) // reason: max_connections, max_connections_per_ip, proxy_untrusted, proxy_header
	AuthDelayed()
	// Authenticated is one attempt's outcome: mechanism and Outcome.Result.
	Authenticated(mechanism, result string)
	// BackendLogin is one backend login that took d; result is "" on success, else
	// unavailable, rejected, unknown_user or error.
	BackendLogin(d time.Duration, result string)
	Relayed(up, down int64)
	// SessionStarted, SessionAuthenticated and SessionEnded follow one connection through
	// the active-session gauges; SessionEnded says whether it had authenticated.
	SessionStarted()
	SessionAuthenticated()
	SessionEnded(authenticated bool)
}

// MemberObserver counts backend logins by pool member; internal/metrics implements it.
type MemberObserver interface {
	// MemberLogin is one backend login through pool's member (its address; "" for a server
	// the pool does not list); result as BackendLogin's.
	MemberLogin(protocol, pool, member, result string)
}

// ObserveMember reports a backend login through route that ended with err to Members, if set.
func (l *Login) ObserveMember(protocol string, route backends.Route, err error) {
	if l.Members == nil || route.Pool == nil {
		return
	}
	member := ""
	if route.Member != nil {
		member = route.Member.Config.Address
	}
	l.Members.MemberLogin(protocol, route.Pool.Name, member, BackendResult(err))
}

// NopObserver observes nothing: the Observer of a listener without metrics.
type NopObserver struct{}

func (NopObserver) Accepted()                          {}
func (NopObserver) Refused(string)                     {}
func (NopObserver) AuthDelayed()                       {}
func (NopObserver) Authenticated(string, string)       {}
func (NopObserver) BackendLogin(time.Duration, string) {}
func (NopObserver) Relayed(int64, int64)               {}
func (NopObserver) SessionStarted()                    {}
func (NopObserver) SessionAuthenticated()              {}
func (NopObserver) SessionEnded(bool)                  {}
