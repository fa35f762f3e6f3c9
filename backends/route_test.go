package backends

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testPools are an imap pool "shard" of members, and "other" of one member; "shard" is the
// default.
func testPools(t *testing.T, members ...string) *Pools {
	t.Helper()
	var mcs []MemberConfig
	for _, m := range members {
		mcs = append(mcs, MemberConfig{Address: m})
	}
	ps, err := NewPools([]PoolConfig{
		{Name: "shard", Protocol: "imap", Config: Config{TLS: "none"}, Members: mcs},
		{Name: "other", Protocol: "imap", Config: Config{TLS: "none", Login: LoginMaster}, Members: []MemberConfig{{Address: "other.internal:143"}}},
	}, map[string]string{"imap": "shard"})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// Rendezvous hashing: each user keeps its member; when one goes down only its users move,
// spread over the others, and they return when it comes back.
func TestPoolPickRendezvous(t *testing.T) {
	ps := testPools(t, "m1.internal:143", "m2.internal:143", "m3.internal:143")
	p := ps.Default("imap")
	users := make([]string, 3000)
	before := map[string]string{}
	count := map[string]int{}
	for i := range users {
		users[i] = fmt.Sprintf("user%d@example.com", i)
		m, err := p.Pick(users[i])
		if err != nil {
			t.Fatal(err)
		}
		before[users[i]] = m.Address()
		count[m.Address()]++
	}
	for addr, n := range count {
		if n < 800 || n > 1200 {
			t.Errorf("member %s got %d of 3000 users, want about 1000", addr, n)
		}
	}
	p.Members[1].SetUp(false)
	moved := 0
	for _, u := range users {
		m, _ := p.Pick(u)
		switch {
		case before[u] == "m2.internal:143":
			if m.Address() == "m2.internal:143" {
				t.Fatalf("%s stays on the member that is down", u)
			}
			moved++
		case m.Address() != before[u]:
			t.Fatalf("%s moved from %s to %s though its member is up", u, before[u], m.Address())
		}
	}
	if moved != count["m2.internal:143"] {
		t.Errorf("%d users moved, want the %d of the member that went down", moved, count["m2.internal:143"])
	}
	p.Members[1].SetUp(true)
	for _, u := range users {
		if m, _ := p.Pick(u); m.Address() != before[u] {
			t.Fatalf("%s is on %s after its member came back, want %s", u, m.Address(), before[u])
		}
	}
	for _, m := range p.Members {
		m.SetUp(false)
	}
	if _, err := p.Pick("alice"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("no member up: %v, want ErrUnavailable", err)
	}
}

// The hash is fixed: another replica (another process) picks the same member.
func TestRendezvousIsFixed(t *testing.T) {
	if got := rendezvous("alice@example.com", "10.0.0.1:143"); got != 0x74c1c3e000d652cd {
		t.Errorf("rendezvous = %#x; changing it moves every user of every site on upgrade", got)
	}
}

// fakeSource answers from a map and counts its lookups.
type fakeSource struct {
	name    string
	answers map[string]Answer
	err     error
	calls   atomic.Int64
	block   chan struct{} // if set, lookups wait for it
}

func (f *fakeSource) Name() string { return f.name }

func (f *fakeSource) Lookup(_ context.Context, q Query) (Answer, bool, error) {
	f.calls.Add(1)
	if f.block != nil {
		<-f.block
	}
	if f.err != nil {
		return Answer{}, false, f.err
	}
	a, ok := f.answers[q.User]
	return a, ok, nil
}

func TestRouterSources(t *testing.T) {
	ps := testPools(t, "m1.internal:143", "m2.internal:143")
	first := &fakeSource{name: "static", answers: map[string]Answer{
		"alice":   {Pool: "other"},
		"bob":     {Server: "m2.internal"},
		"carol":   {Server: "m2.internal:143", User: "carol.backend", Secret: "s3cret"},
		"dave":    {Pool: "nosuch"},
		"eve":     {Server: "evil.example.com:143"},
		"frank":   {Server: "m1.internal\r\nA LOGIN x y"},
		"grace":   {Server: "m1.internal", User: "grace\r\n"},
		"heidi":   {Server: "m1.internal:99999"},
		"ivan":    {Server: "m1.internal", Pool: "other"},
		"judy":    {Server: "m1 .internal"},
		"mallory": {Server: "http://m1.internal/"},
	}}
	second := &fakeSource{name: "http", answers: map[string]Answer{"alice": {Pool: "shard"}, "zoe": {Pool: "other"}}}
	r := NewRouter(ps, []Source{first, second}, RoutesConfig{}, nil)
	route := func(user string) (Route, error) {
		return r.Route(context.Background(), Query{Protocol: "imap", User: user})
	}
	for _, c := range []struct{ user, source, pool, member, backendUser string }{
		{"alice", "static", "other", "other.internal:143", "alice"}, // first source wins
		{"bob", "static", "shard", "m2.internal:143", "bob"},
		{"carol", "static", "shard", "m2.internal:143", "carol.backend"},
		{"zoe", "http", "other", "other.internal:143", "zoe"},
		{"nobody", "default", "shard", "", "nobody"},
	} {
		rt, err := route(c.user)
		if err != nil {
			t.Errorf("%s: %v", c.user, err)
			continue
		}
		if rt.Source != c.source || rt.Pool.Name != c.pool || (c.member != "" && rt.Config.Address != c.member) || rt.User != c.backendUser {
			t.Errorf("%s: route %s pool %s member %s user %s, want %s %s %s %s", c.user, rt.Source, rt.Pool.Name, rt.Config.Address, rt.User, c.source, c.pool, c.member, c.backendUser)
		}
	}
	if rt, _ := route("carol"); rt.Secret.Reveal() != "s3cret" {
		t.Errorf("carol's route secret %q, want the source's", rt.Secret.Reveal())
	}
	if rt, _ := route("alice"); rt.Config.Login != LoginMaster {
		t.Errorf("a route into pool other logs in with %q, want the pool's master", rt.Config.Login)
	}
	// Each unusable answer is a temporary failure, never the next source or the default pool.
	for _, user := range []string{"dave", "eve", "frank", "grace", "heidi", "ivan", "judy", "mallory"} {
		rt, err := route(user)
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: route to %v, err %v; want ErrUnavailable", user, rt.Config.Address, err)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("%s: error carries CR/LF: %q", user, err)
		}
	}
	// A source that fails fails the login: no fallback to the next source.
	first.err = errors.New("directory down")
	if _, err := route("walter"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "directory down") {
		t.Errorf("failing source: %v, want ErrUnavailable naming its error", err)
	}
	// A member a server answer names that is down: unavailable, not another member.
	first.err = nil
	ps.Default("imap").Members[1].SetUp(false)
	r2 := NewRouter(ps, []Source{first}, RoutesConfig{}, nil)
	if _, err := r2.Route(context.Background(), Query{Protocol: "imap", User: "bob"}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "is down") {
		t.Errorf("bob's member down: %v, want ErrUnavailable saying it is down", err)
	}
}

func TestRouterNonMembers(t *testing.T) {
	ps, err := NewPools([]PoolConfig{{Name: "shard", Protocol: "imap", Config: Config{TLS: "starttls", CAFile: "/ca.pem"},
		Members: []MemberConfig{{Address: "m1.internal:143"}}, AllowNonMembers: true}}, map[string]string{"imap": "shard"})
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{name: "ldap", answers: map[string]Answer{"alice": {Server: "mail9.internal"}, "bob": {Server: "10.1.2.3:1143"}}}
	r := NewRouter(ps, []Source{src}, RoutesConfig{}, nil)
	rt, err := r.Route(context.Background(), Query{Protocol: "imap", User: "alice"})
	if err != nil || rt.Member != nil || rt.Config.Address != "mail9.internal:143" || rt.Config.TLS != "starttls" || rt.Config.CAFile != "/ca.pem" || rt.Config.ServerName != "mail9.internal" {
		t.Errorf("alice: %+v %v; want mail9.internal:143 with the pool's TLS settings", rt.Config, err)
	}
	rt, err = r.Route(context.Background(), Query{Protocol: "imap", User: "bob"})
	if err != nil || rt.Config.Address != "10.1.2.3:1143" {
		t.Errorf("bob: %+v %v", rt.Config, err)
	}
}

// Answers are cached per protocol and user for the TTL, and 64 concurrent logins of one
// user make one lookup.
func TestRouterCacheAndCoalescing(t *testing.T) {
	ps := testPools(t, "m1.internal:143")
	src := &fakeSource{name: "http", answers: map[string]Answer{"alice": {Pool: "other"}}, block: make(chan struct{})}
	r := NewRouter(ps, []Source{src}, RoutesConfig{}, nil)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			_, err := r.Route(context.Background(), Query{Protocol: "imap", User: "alice"})
			errs <- err
		})
	}
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the others queue behind the first
	close(src.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("64 concurrent logins made %d lookups, want 1", n)
	}
	r.Route(context.Background(), Query{Protocol: "imap", User: "alice"})
	r.Route(context.Background(), Query{Protocol: "imap", User: "nobody"})
	r.Route(context.Background(), Query{Protocol: "imap", User: "nobody"})
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d lookups, want 2: alice cached, nobody's not-found cached too", n)
	}
	mu.Lock()
	now = now.Add(DefaultRouteTTL + time.Second)
	mu.Unlock()
	r.Route(context.Background(), Query{Protocol: "imap", User: "alice"})
	if n := src.calls.Load(); n != 3 {
		t.Errorf("%d lookups after the TTL, want 3", n)
	}
	// Failures are not cached.
	src.err = errors.New("down")
	r.Route(context.Background(), Query{Protocol: "imap", User: "carol"})
	r.Route(context.Background(), Query{Protocol: "imap", User: "carol"})
	if n := src.calls.Load(); n != 5 {
		t.Errorf("%d lookups, want 5: a failed lookup is asked again", n)
	}
}

func TestStaticSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes")
	writeFile(t, path, "# routes\nalice@example.com  other   # a pool\nBob@Example.com m2.internal:143\n@example.org  m1.internal\n\n", 0o644)
	s, err := NewStaticSource(StaticConfig{File: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user  string
		want  Answer
		found bool
	}{
		{"alice@example.com", Answer{Pool: "other"}, true},
		{"ALICE@example.com", Answer{Pool: "other"}, true},
		{"Bob@Example.com", Answer{Server: "m2.internal:143"}, true},
		{"carol@EXAMPLE.org", Answer{Server: "m1.internal"}, true},
		{"carol@example.net", Answer{}, false},
	} {
		a, found, err := s.Lookup(context.Background(), Query{User: c.user})
		if err != nil || found != c.found || a != c.want {
			t.Errorf("%s: %+v %v %v, want %+v %v", c.user, a, found, err, c.want, c.found)
		}
	}
	// A changed file is re-read (within a second); a broken one is logged and the last kept.
	ss := s.(*staticSource)
	writeFile(t, path, "alice@example.com m3.internal\n", 0o644)
	ss.mu.Lock()
	ss.checked, ss.mtime = time.Time{}, time.Time{}
	ss.mu.Unlock()
	if a, _, _ := s.Lookup(context.Background(), Query{User: "alice@example.com"}); a.Server != "m3.internal" {
		t.Errorf("after the change: %+v, want m3.internal", a)
	}
	writeFile(t, path, "alice@example.com m3 .internal x\n", 0o644)
	ss.mu.Lock()
	ss.checked, ss.mtime = time.Time{}, time.Time{}
	ss.mu.Unlock()
	if a, _, _ := s.Lookup(context.Background(), Query{User: "alice@example.com"}); a.Server != "m3.internal" {
		t.Errorf("after a broken change: %+v, want the last good m3.internal", a)
	}
}

func TestStaticMapErrors(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"alice\n", "routes:1: want a user or @domain and a pool or server, got 1 fields"},
		{"a b c\n", "routes:1: want a user or @domain"},
		{"\nalice m1.internal:0\n", "routes:2: server \"m1.internal:0\": port must be"},
		{"alice m1.internal\nalice m2.internal\n", "routes:2: \"alice\" is listed twice"},
		{"alice http://x/\n", "routes:1: server"},
		{"alice\x01 m1.internal\n", "routes:1: key"},
		{"alice " + strings.Repeat("x", 5000) + "\n", "token too long"},
	} {
		_, err := parseStaticMap(strings.NewReader(c.file), "routes")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.file, err, c.want)
		}
	}
}

func TestSplitServer(t *testing.T) {
	for _, c := range []struct{ in, host, port string }{
		{"mail.internal", "mail.internal", ""},
		{"mail.internal:143", "mail.internal", "143"},
		{"10.0.0.1", "10.0.0.1", ""},
		{"[2001:db8::1]:993", "2001:db8::1", "993"},
		{"2001:db8::1", "2001:db8::1", ""},
	} {
		h, p, err := SplitServer(c.in)
		if err != nil || h != c.host || p != c.port {
			t.Errorf("%q: %q %q %v", c.in, h, p, err)
		}
	}
	for _, bad := range []string{"", "mail internal", "mail.internal:", "mail.internal:x", "mail\r\n.internal", "-mail.internal", "mail..internal", "[::1]", "a:b:c:", "user@mail.internal", "mail.internal/path"} {
		if _, _, err := SplitServer(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The auth_http source sends nginx's request headers (never a token) and reads its answer.
func TestHTTPSource(t *testing.T) {
	var got http.Header
	answer := http.Header{}
	code := 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		for k, v := range answer {
			w.Header()[k] = v
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()
	s, err := NewHTTPSource(HTTPConfig{URL: srv.URL + "/auth", Headers: map[string]string{"X-Auth-Key": "k3y"}})
	if err != nil {
		t.Fatal(err)
	}
	q := Query{Protocol: "imap", User: "alice@example.com", Mechanism: "OAUTHBEARER", Attempt: 2, Client: Client{Addr: netip.MustParseAddrPort("192.0.2.7:40000")}}
	lookup := func(h http.Header) (Answer, bool, error) {
		answer = h
		return s.Lookup(context.Background(), q)
	}
	a, found, err := lookup(http.Header{"Auth-Status": {"OK"}, "Auth-Server": {"10.0.0.2"}, "Auth-Port": {"143"}, "Auth-User": {"alice"}, "Auth-Pass": {"pw"}})
	if err != nil || !found || a.Server != "10.0.0.2:143" || a.User != "alice" || a.Secret.Reveal() != "pw" {
		t.Errorf("OK answer: %+v %v %v", a, found, err)
	}
	for k, v := range map[string]string{"Auth-Method": "external", "Auth-Sasl-Mechanism": "OAUTHBEARER", "Auth-User": "alice@example.com",
		"Auth-Protocol": "imap", "Auth-Login-Attempt": "2", "Auth-Ssl": "on", "Client-Ip": "192.0.2.7", "Client-Port": "40000", "X-Auth-Key": "k3y"} {
		if got.Get(k) != v {
			t.Errorf("request header %s = %q, want %q", k, got.Get(k), v)
		}
	}
	if got.Get("Auth-Pass") != "" {
		t.Errorf("request carries Auth-Pass %q: the token must never be sent", got.Get("Auth-Pass"))
	}
	if a, found, err := lookup(http.Header{"Auth-Status": {"OK"}, "Auth-Pool": {"shard"}}); err != nil || !found || a.Pool != "shard" {
		t.Errorf("Auth-Pool: %+v %v %v", a, found, err)
	}
	if _, found, err := lookup(http.Header{"Auth-Status": {"OK"}}); err != nil || found {
		t.Errorf("OK without a server: found %v err %v, want not found", found, err)
	}
	if _, _, err := lookup(http.Header{"Auth-Status": {"Invalid login or password"}}); !errors.Is(err, ErrRouteRefused) || !errors.Is(err, ErrRejected) {
		t.Errorf("refusal: %v, want ErrRouteRefused", err)
	}
	for _, h := range []http.Header{
		{"Auth-Status": {"Temporary server problem"}, "Auth-Wait": {"3"}},
		{"Auth-Status": {"Temporary server problem"}, "Auth-Error-Code": {"451 4.3.0"}},
	} {
		if _, _, err := lookup(h); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%v: %v, want ErrUnavailable", h, err)
		}
	}
	for _, h := range []http.Header{
		{},
		{"Auth-Status": {"OK"}, "Auth-Server": {"10.0.0.2"}},
		{"Auth-Status": {"OK"}, "Auth-Port": {"143"}},
		{"Auth-Status": {"OK"}, "Auth-Server": {"10.0.0.2", "10.0.0.3"}, "Auth-Port": {"143"}},
		{"Auth-Status": {"OK"}, "Auth-Server": {"10.0.0.2:25"}, "Auth-Port": {"143"}},
	} {
		if _, _, err := lookup(h); err == nil {
			t.Errorf("%v accepted", h)
		}
	}
	code = 500
	if _, _, err := lookup(http.Header{"Auth-Status": {"OK"}, "Auth-Pool": {"shard"}}); err == nil {
		t.Error("a 500 answer accepted")
	}
}

// The health check reads each protocol's greeting; a member fails after Fall checks and
// comes back after Rise.
func TestCheckGreeting(t *testing.T) {
	for _, c := range []struct {
		protocol, greeting string
		ok                 bool
	}{
		{"imap", "* OK ready\r\n", true},
		{"imap", "* BYE go away\r\n", false},
		{"smtp", "220-mx\r\n220 ready\r\n", true},
		{"smtp", "421 busy\r\n", false},
		{"pop3", "+OK ready\r\n", true},
		{"pop3", "-ERR no\r\n", false},
		{"sieve", "\"IMPLEMENTATION\" \"x\"\r\n\"SIEVE\" \"fileinto\"\r\nOK \"ready\"\r\n", true},
		{"sieve", "\"IMPLEMENTATION\" \"x\"\r\nBYE \"no\"\r\n", false},
		{"imap", "", false},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c2, err := ln.Accept()
			if err != nil {
				return
			}
			c2.Write([]byte(c.greeting))
			bufio.NewReader(c2).ReadString('\n')
			c2.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = CheckGreeting(ctx, c.protocol, Config{Address: ln.Addr().String(), TLS: "none"})
		cancel()
		ln.Close()
		if (err == nil) != c.ok {
			t.Errorf("%s %q: %v, want ok=%v", c.protocol, c.greeting, err, c.ok)
		}
	}

	ps := testPools(t, "m1.internal:143")
	m := ps.Default("imap").Members[0]
	bad := errors.New("down")
	for i, c := range []struct {
		err     error
		up, chg bool
	}{{bad, true, false}, {bad, true, false}, {nil, true, false}, {bad, true, false}, {bad, true, false}, {bad, false, true},
		{nil, false, false}, {bad, false, false}, {nil, false, false}, {nil, true, true}} {
		if chg := m.record(c.err); chg != c.chg || m.Up() != c.up {
			t.Fatalf("check %d (%v): up %v changed %v, want %v %v", i, c.err, m.Up(), chg, c.up, c.chg)
		}
	}
}

func TestPoolConfigValidate(t *testing.T) {
	ok := PoolConfig{Name: "shard-1", Protocol: "imap", Config: Config{TLS: "starttls"}, Members: []MemberConfig{{Address: "m1:143"}, {Address: "m2:143", TLS: "implicit"}}}
	if err := ok.Validate("pools[0]"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		edit func(*PoolConfig)
		want string
	}{
		{func(p *PoolConfig) { p.Name = "shard.1" }, "pools[0]: name:"},
		{func(p *PoolConfig) { p.Protocol = "" }, "pools[0]: protocol: required"},
		{func(p *PoolConfig) { p.Address = "m1:143" }, "pools[0]: address: a pool has members"},
		{func(p *PoolConfig) { p.Members = nil }, "pools[0]: members: at least one"},
		{func(p *PoolConfig) { p.Members = append(p.Members, MemberConfig{Address: "m1:143"}) }, "members[2]: address m1:143 is listed twice"},
		{func(p *PoolConfig) { p.Members[1].TLS = "sometimes" }, "members[1]: backends: tls:"},
		{func(p *PoolConfig) { p.Login = LoginXClient }, `"xclient" is for SMTP pools`},
		{func(p *PoolConfig) { p.HealthCheck.Fall = -1 }, "health_check:"},
	} {
		p := ok
		p.Members = append([]MemberConfig(nil), ok.Members...)
		c.edit(&p)
		if err := p.Validate("pools[0]"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
}

// mapStore is a RouteStore in memory, as internal/shared.Store would be.
type mapStore struct {
	mu   sync.Mutex
	m    map[string][]byte
	fail bool
}

func (s *mapStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, errors.New("store down")
	}
	return s.m[key], nil
}

func (s *mapStore) Set(_ context.Context, key string, v []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("store down")
	}
	s.m[key] = v
	return nil
}

// With routes shared, a lookup one replica made serves another: its source is not asked
// again. Answers with a secret stay local; foreign, expired, malformed or unusable entries are
// ignored and the source asked; a store that fails costs nothing but the sharing.
func TestRouterShared(t *testing.T) {
	ps := testPools(t, "m1.internal:143")
	store := &mapStore{m: map[string][]byte{}}
	newReplica := func() (*Router, *fakeSource) {
		src := &fakeSource{name: "http", answers: map[string]Answer{
			"alice": {Pool: "other", User: "alice.b"},
			"bob":   {Server: "m1.internal", Secret: "s3cret"},
		}}
		r := NewRouter(ps, []Source{src}, RoutesConfig{}, nil)
		r.Share(store)
		return r, src
	}
	a, srcA := newReplica()
	b, srcB := newReplica()
	route := func(r *Router, user string) Route {
		t.Helper()
		rt, err := r.Route(context.Background(), Query{Protocol: "imap", User: user})
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		return rt
	}
	route(a, "alice")
	route(a, "nobody")
	if rt := route(b, "alice"); rt.Pool.Name != "other" || rt.User != "alice.b" || rt.Source != "http" {
		t.Errorf("replica B's route for alice: %+v", rt)
	}
	route(b, "nobody")
	if srcA.calls.Load() != 2 || srcB.calls.Load() != 0 {
		t.Errorf("source asked %d times by A and %d by B, want 2 and 0", srcA.calls.Load(), srcB.calls.Load())
	}
	// bob's answer carries a secret: never stored, so B asks its source.
	route(a, "bob")
	for k, v := range store.m {
		if strings.Contains(string(v), "s3cret") || strings.Contains(k, "bob") {
			t.Errorf("store holds %s = %s", k, v)
		}
	}
	if rt := route(b, "bob"); rt.Secret.Reveal() != "s3cret" || srcB.calls.Load() != 1 {
		t.Errorf("bob on B: secret %q after %d lookups, want B's own lookup", rt.Secret.Reveal(), srcB.calls.Load())
	}

	// Hostile or stale entries under carol's key: each ignored, the source asked.
	carol := Query{Protocol: "imap", User: "carol"}
	exp := time.Now().Add(time.Minute).Unix()
	for i, v := range []string{
		"not json",
		fmt.Sprintf(`{"v":2,"protocol":"imap","user":"carol","source":"http","pool":"other","expires":%d}`, exp),
		fmt.Sprintf(`{"v":1,"protocol":"imap","user":"mallory","source":"http","pool":"other","expires":%d}`, exp),
		fmt.Sprintf(`{"v":1,"protocol":"imap","user":"carol","source":"http","pool":"other","expires":%d}`, time.Now().Add(-time.Second).Unix()),
		fmt.Sprintf(`{"v":1,"protocol":"imap","user":"carol","source":"ldap","pool":"other","expires":%d}`, exp),
		fmt.Sprintf(`{"v":1,"protocol":"imap","user":"carol","source":"http","server":"evil.example\r\nA LOGIN x y","expires":%d}`, exp),
		fmt.Sprintf(`{"v":1,"protocol":"imap","user":"carol","source":"http","pool":"other","secret":"x","expires":%d}`, exp),
		fmt.Sprintf(`{"v":1,"protocol":"imap","user":"carol","source":"","pool":"other","expires":%d}`, exp),
		strings.Repeat(" ", maxSharedRoute+1) + "{}",
	} {
		r, src := newReplica()
		src.answers["carol"] = Answer{Pool: "shard"}
		store.m[sharedRouteKey(carol)] = []byte(v)
		if rt := route(r, "carol"); rt.Pool.Name != "shard" || src.calls.Load() != 1 {
			t.Errorf("entry %d taken: route %s after %d lookups", i, rt.Pool.Name, src.calls.Load())
		}
	}
	store.fail = true
	r, src := newReplica()
	if rt := route(r, "alice"); rt.Pool.Name != "other" || src.calls.Load() != 1 {
		t.Errorf("store down: %+v after %d lookups", rt, src.calls.Load())
	}
}
