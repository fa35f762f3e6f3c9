package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// needRedis returns the redis-server binary (Debian's redis-server package). Missing, it
// fails the test under SASLGATE_E2E=require and skips it otherwise, like needSlapd.
func needRedis(t *testing.T) string {
	t.Helper()
	for _, c := range []string{"redis-server", "/usr/bin/redis-server", "valkey-server"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	const missing = "e2e: missing redis-server (not in PATH; apt-get install redis-server)"
	if os.Getenv(envGate) == "require" {
		t.Fatalf("%s (%s=require)", missing, envGate)
	}
	t.Skipf("%s; set %s=require to make this an error", missing, envGate)
	return ""
}

// redisServer is a redis-server on a loopback port, with no persistence: a restart is an
// empty store.
type redisServer struct {
	t         *testing.T
	bin, addr string
	dir, log  string
	args      []string // added to the command line (a replica's --replicaof)
	proc      *proc
}

func startRedis(t *testing.T, dir string) *redisServer {
	t.Helper()
	return startRedisAs(t, dir, "redis")
}

// startRedisReplica starts a redis-server replicating primary, and waits for its first sync.
func startRedisReplica(t *testing.T, dir string, primary *redisServer) *redisServer {
	t.Helper()
	host, port, _ := net.SplitHostPort(primary.addr)
	r := startRedisAs(t, dir, "redis-replica", "--replicaof", host, port)
	waitLog(t, r.log, "MASTER <-> REPLICA sync: Finished with success")
	return r
}

// startRedisAs starts a redis-server logging to dir/name.log, with args added.
func startRedisAs(t *testing.T, dir, name string, args ...string) *redisServer {
	t.Helper()
	r := &redisServer{t: t, bin: needRedis(t), dir: dir, log: filepath.Join(dir, name+".log"), args: args}
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r.addr = addr
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisServer) start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	p, err := startProc("redis-server", r.log, nil, func(line string) bool {
		return strings.Contains(line, "Ready to accept connections")
	}, 15*time.Second, append([]string{r.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "no"}, r.args...)...)
	if err != nil {
		r.t.Fatalf("redis-server: %v\n%s", err, tail(r.log, 4<<10))
	}
	r.proc = p
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitPort(ctx, r.addr, p); err != nil {
		r.t.Fatalf("redis-server: %v\n%s", err, tail(r.log, 4<<10))
	}
}

func (r *redisServer) stop() { r.proc.stop() }

func (r *redisServer) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.addr, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// sharedGatePair starts two replicas, A and B, sharing the store r under prefix, each with
// an admin listener; the failed-authentication delay is on (auth_failures failures pass).
// routes is their routes section, or "".
func (e *env) sharedGatePair(t *testing.T, r *redisServer, prefix string, issuers []string, authFailures int, routes string) (a, b *gate, adminA, adminB string) {
	t.Helper()
	start := func(name string) (*gate, string) {
		admin, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		g := e.startTestGate(t, gateSpec{
			name:    name,
			issuers: issuers,
			limits:  fmt.Sprintf("{auth_failures: %d, auth_failure_window: 10m, auth_delay: 600ms, max_auth_delay: 600ms, max_connections_per_ip: 1000}", authFailures),
			extra:   fmt.Sprintf("admin: {address: %s}\nshared: {address: %s, key_prefix: %q, timeout: 250ms}\n%s", admin, r.addr, prefix, routes),
		})
		return g, admin
	}
	a, adminA = start("saslgate-shared-a")
	b, adminB = start("saslgate-shared-b")
	return a, b, adminA, adminB
}

// TestSharedReplicas runs two `saslgate serve` replicas sharing one redis-server: an
// introspection result cached by A is reused by B (the IdP counts one request), a TLS
// session from A resumes on B, hostile store entries are ignored, failures on A delay B;
// with the store stopped both keep logging in and say so (metrics, log); with it back,
// sharing resumes.
func TestSharedReplicas(t *testing.T) {
	e := e2e(t)
	r := startRedis(t, t.TempDir())
	rc := r.client(t)
	o := e.startTestIdP(t, "idp-shared")
	const prefix = "e2e-shared:"
	const threshold = 6
	// Routes come from an auth_http responder the test runs, and are shared: one lookup per
	// user serves both replicas.
	_, dovecotPort, _ := net.SplitHostPort(e.dovecot.addr)
	var routeLookups atomic.Int64
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		routeLookups.Add(1)
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", "127.0.0.1")
		w.Header().Set("Auth-Port", dovecotPort)
	}))
	defer responder.Close()
	a, b, adminA, adminB := e.sharedGatePair(t, r, prefix,
		[]string{jwtIssuer(e.idp.issuer), e.introspectionIssuer(t, o.issuer)}, threshold,
		fmt.Sprintf("routes: {shared: true, cache_ttl: 10m, sources: [{http: {url: %q}}]}\n", responder.URL))
	entryKey := func(token string) string {
		sum := sha256.Sum256([]byte(token))
		return prefix + "val:" + hex.EncodeToString(sum[:]) + ":imap"
	}
	ctx := context.Background()

	var tok string
	t.Run("introspection result cached by A is used by B", func(t *testing.T) {
		tok = o.mintOpaque(t, "alice")
		o.resetCounts(t)
		e.loginOK(t, a, tok)
		e.loginOK(t, b, tok)
		if c := o.counts(t); c.Introspection != 1 {
			t.Errorf("one token on two replicas caused %d introspection requests, want 1", c.Introspection)
		}
		v, err := rc.Get(ctx, entryKey(tok)).Bytes()
		if err != nil {
			t.Fatalf("no shared entry under the token's hash: %v", err)
		}
		if strings.Contains(string(v), "alice") || strings.Contains(string(v), tok) {
			t.Errorf("the shared entry is readable without the token: %q", v)
		}
		keys, _ := rc.Keys(ctx, "*").Result()
		for _, k := range keys {
			if strings.Contains(k, tok) {
				t.Errorf("a store key holds the token: %s", k)
			}
		}
	})

	t.Run("a route looked up by A is used by B", func(t *testing.T) {
		// The subtest above logged alice in on both: one responder request between them.
		if n := routeLookups.Load(); n != 1 {
			t.Errorf("alice's logins on two replicas made %d route lookups, want 1", n)
		}
		keys, _ := rc.Keys(ctx, prefix+"route:*").Result()
		if len(keys) != 1 {
			t.Errorf("route entries in the store: %q, want one", keys)
		}
	})

	t.Run("a TLS session from A resumes on B", func(t *testing.T) {
		for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			cfg := e.tlsConfig()
			cfg.MaxVersion = v
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			if greetTLS(t, a.imaps, cfg) {
				t.Fatalf("version %x: the first connection resumed", v)
			}
			if !greetTLS(t, b.imaps, cfg) {
				t.Errorf("version %x: the session from A did not resume on B", v)
			}
		}
	})

	t.Run("hostile store entries are ignored", func(t *testing.T) {
		genuine, err := rc.Get(ctx, entryKey(tok)).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		garbage := make([]byte, 200)
		rand.Read(garbage)
		garbage[0] = 1
		plain := fmt.Sprintf(`{"until":%d,"mode":"introspection","user":"alice","iss":%q}`, time.Now().Add(time.Hour).UnixNano(), o.issuer)
		entries := map[string][]byte{
			"another token's genuine entry": genuine,
			"random bytes with our version": garbage,
			"oversized":                     []byte(strings.Repeat("A", 1<<20)),
			"unsealed plausible entry":      append([]byte{1}, plain...),
		}
		o.resetCounts(t)
		i := 0
		for name, v := range entries {
			// An unknown token the IdP calls inactive; a hostile entry must not log it in.
			bogus := "bogus" + strings.Repeat(fmt.Sprint(i), 8) + hex.EncodeToString(garbage[:8])
			if err := rc.Set(ctx, entryKey(bogus), v, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			g := a
			if i%2 == 1 {
				g = b
			}
			i++
			t.Run(name, func(t *testing.T) { e.loginRefused(t, g, bogus) })
		}
		if c := o.counts(t); c.Introspection != len(entries) {
			t.Errorf("%d tokens with planted entries caused %d introspection requests, want %d (each checked at the IdP)", len(entries), c.Introspection, len(entries))
		}
	})

	t.Run("failures on A delay B", func(t *testing.T) {
		// The hostile entries' tokens were 4 failures, 2 per replica; 2 more on A make the
		// shared count the threshold, which neither replica reaches on its own.
		bad := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) // expired
		for range threshold - 4 {
			e.loginRefused(t, a, bad)
		}
		start := time.Now()
		e.loginRefused(t, b, bad)
		if d := time.Since(start); d < 600*time.Millisecond {
			t.Errorf("B answered after %v: the failures on A did not delay it (600ms)", d)
		}
		// The count was alice's from this address: bob from the same address is not held
		// back (the address's own count, default 20, is not reached).
		delays := metricValue(scrape(t, adminB), "saslgate_auth_delays_total", "")
		w := dialWire(t, b.imaps, e.tlsConfig())
		w.greeting()
		authFails(t, w, "OAUTHBEARER", oauthBearerIR(mailUser2, "", 0, bad), "invalid_token", "AQ==")
		if n := metricValue(scrape(t, adminB), "saslgate_auth_delays_total", ""); n != delays {
			t.Errorf("bob's attempt from alice's address was delayed (%v delays, was %v)", n, delays)
		}
	})

	t.Run("store stopped: logins continue on both, metrics and log say so", func(t *testing.T) {
		r.stop()
		e.loginOK(t, a, tok)
		e.loginOK(t, b, tok)
		fresh := o.mintOpaque(t, "alice")
		e.loginOK(t, a, fresh)
		e.loginOK(t, b, fresh)
		for _, g := range []struct{ name, admin, log string }{{"A", adminA, a.log}, {"B", adminB, b.log}} {
			m := scrape(t, g.admin)
			if !strings.Contains(m, `saslgate_shared_calls_total{op="get",result="error"}`) {
				t.Errorf("%s: no failed store call in the metrics:\n%s", g.name, grepLines(m, "saslgate_shared_calls_total"))
			}
			if !logHas(g.log, 0, "shared store unavailable; using local state") {
				t.Errorf("%s: the log does not say the store is unavailable", g.name)
			}
		}
	})

	t.Run("store back: sharing resumes", func(t *testing.T) {
		r.start()
		deadline := time.Now().Add(20 * time.Second)
		for {
			tok := o.mintOpaque(t, "alice")
			o.resetCounts(t)
			e.loginOK(t, a, tok)
			e.loginOK(t, b, tok)
			if o.counts(t).Introspection == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("20 s after the store came back, the replicas still do not share results")
			}
			time.Sleep(500 * time.Millisecond)
		}
		for _, g := range []struct{ name, log string }{{"A", a.log}, {"B", b.log}} {
			if !logHas(g.log, 0, "shared store reachable again") {
				t.Errorf("%s: the log does not say the store is back", g.name)
			}
		}
	})
}

// greetTLS connects, reads the IMAP greeting (so a TLS 1.3 ticket is received) and reports
// whether the session was resumed.
func greetTLS(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

func scrape(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// startSentinel starts redis-server --sentinel monitoring primary as "e2e" (quorum 1), with
// the sentinel settings given ("down-after-milliseconds 500"), and returns its address and log.
func startSentinel(t *testing.T, dir string, primary *redisServer, settings ...string) (addr, log string) {
	t.Helper()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	_, primaryPort, _ := net.SplitHostPort(primary.addr)
	conf := fmt.Sprintf("port %s\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor e2e 127.0.0.1 %s 1\n", port, dir, primaryPort)
	for _, s := range settings {
		conf += "sentinel " + strings.Replace(s, " ", " e2e ", 1) + "\n"
	}
	path := filepath.Join(dir, "sentinel.conf") // sentinel rewrites it: a file of its own
	writeFile0600(t, path, conf)
	log = filepath.Join(dir, "sentinel.log")
	p, err := startProc("redis-sentinel", log, nil, func(line string) bool {
		return strings.Contains(line, "+monitor master e2e")
	}, 15*time.Second, primary.bin, path, "--sentinel")
	if err != nil {
		t.Fatalf("redis-server --sentinel: %v\n%s", err, tail(log, 4<<10))
	}
	t.Cleanup(p.stop)
	return addr, log
}

// sentinelGate starts a saslgate replica named name whose shared store is found through the
// sentinel at addr, with an introspection issuer (so a validation it caches is a key in the
// store).
func (e *env) sentinelGate(t *testing.T, name, issuer, addr, prefix string) *gate {
	t.Helper()
	return e.startTestGate(t, gateSpec{
		name:    name,
		issuers: []string{e.introspectionIssuer(t, issuer)},
		extra:   fmt.Sprintf("shared: {sentinel: {master_name: e2e, addresses: [%q]}, key_prefix: %q, timeout: 500ms}\n", addr, prefix),
	})
}

// TestSharedSentinel: a replica that finds its store through Redis Sentinel (shared.sentinel)
// writes to the primary the sentinel names: an introspection result it caches is there, and
// a second replica configured the same way reuses it (the IdP counts one request).
func TestSharedSentinel(t *testing.T) {
	e := e2e(t)
	dir := t.TempDir()
	primary := startRedis(t, dir)
	sentinelAddr, _ := startSentinel(t, dir, primary)

	o := e.startTestIdP(t, "idp-sentinel")
	const prefix = "e2e-sentinel:"
	a := e.sentinelGate(t, "saslgate-sentinel-a", o.issuer, sentinelAddr, prefix)
	b := e.sentinelGate(t, "saslgate-sentinel-b", o.issuer, sentinelAddr, prefix)
	tok := o.mintOpaque(t, "alice")
	o.resetCounts(t)
	e.loginOK(t, a, tok)
	e.loginOK(t, b, tok)
	if c := o.counts(t); c.Introspection != 1 {
		t.Errorf("one token on two replicas behind Sentinel caused %d introspection requests, want 1", c.Introspection)
	}
	keys, err := primary.client(t).Keys(context.Background(), prefix+"val:*").Result()
	if err != nil || len(keys) != 1 {
		t.Errorf("validation entries on the primary Sentinel names: %q, %v; want one", keys, err)
	}
	for _, g := range []*gate{a, b} {
		if logHas(g.log, 0, "shared store unavailable") {
			t.Errorf("%s: the store was unavailable through Sentinel:\n%s", filepath.Base(g.log), tail(g.log, 2<<10))
		}
	}
}

// TestSharedSentinelFailover: the primary fails and Sentinel promotes its replica. saslgate,
// not restarted, lets clients log in meanwhile (the store fails open) and then writes to the
// new primary: a token validated after the switch is cached there.
func TestSharedSentinelFailover(t *testing.T) {
	e := e2e(t)
	dir := t.TempDir()
	primary := startRedis(t, dir)
	replica := startRedisReplica(t, dir, primary)
	sentinelAddr, sentinelLog := startSentinel(t, dir, primary, "down-after-milliseconds 500", "failover-timeout 5000")
	_, replicaPort, _ := net.SplitHostPort(replica.addr)
	waitLog(t, sentinelLog, "+slave slave 127.0.0.1:"+replicaPort) // the sentinel knows whom to promote

	o := e.startTestIdP(t, "idp-sentinel-failover")
	const prefix = "e2e-failover:"
	g := e.sentinelGate(t, "saslgate-sentinel-failover", o.issuer, sentinelAddr, prefix)
	e.loginOK(t, g, o.mintOpaque(t, "alice"))
	if keys, err := primary.client(t).Keys(context.Background(), prefix+"val:*").Result(); err != nil || len(keys) != 1 {
		t.Fatalf("validation entries on the first primary: %q, %v; want one", keys, err)
	}

	primary.stop()
	e.loginOK(t, g, o.mintOpaque(t, "alice")) // during the failover
	waitLog(t, sentinelLog, "+switch-master e2e")

	// A token validated from now on is cached on the replica, now the primary, beside what it
	// holds from before (replicated). saslgate may take a moment to hear of the switch: each
	// login is a new token, until one is there.
	promoted := replica.client(t)
	before, err := promoted.Keys(context.Background(), prefix+"val:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		e.loginOK(t, g, o.mintOpaque(t, "alice"))
		keys, err := promoted.Keys(context.Background(), prefix+"val:*").Result()
		if err == nil && len(keys) > len(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no validation entry on the promoted replica 15s after the switch: %q, %v\n%s", keys, err, tail(g.log, 3<<10))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if role, err := promoted.Do(context.Background(), "ROLE").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
		t.Errorf("ROLE of the promoted replica = %v, %v; want master", role, err)
	}
}
