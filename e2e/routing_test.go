package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A cluster of two Dovecots, d1 and d2, each with alice's and bob's mailboxes; every mailbox
// holds a message whose Message-ID names its server (<d1@route.e2e>), so a client sees which
// server it reached.

type cluster struct {
	d1, d2 *routeDovecot
}

type routeDovecot struct {
	*dovecot
	name, dir string
}

func (e *env) startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{}
	for i, p := range []**routeDovecot{&c.d1, &c.d2} {
		name := fmt.Sprintf("d%d", i+1)
		dir := filepath.Join(e.dir, t.Name(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		d, err := startDovecotWith(ctx, dir, dovecotOptions{key: e.hmacKey})
		cancel()
		rd := &routeDovecot{dovecot: d, name: name, dir: dir}
		if d != nil && d.proc != nil {
			t.Cleanup(func() {
				rd.proc.stop()
				if t.Failed() {
					t.Logf("----- %s/dovecot.log (tail) -----\n%s", name, tail(d.log, 4<<10))
				}
			})
		}
		if err != nil {
			t.Fatalf("dovecot %s: %v", name, err)
		}
		for _, u := range []string{mailUser, mailUser2} {
			rd.mark(t, u)
		}
		*p = rd
	}
	return c
}

// mark delivers the message naming d into user's mailbox, owned like the rest of it.
func (d *routeDovecot) mark(t *testing.T, user string) {
	t.Helper()
	maildir := filepath.Join(d.dir, "mail", user, "Maildir")
	path := filepath.Join(maildir, "new", "1700000100.M1P1."+d.name)
	msg := fmt.Sprintf("From: e2e@example.com\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@route.e2e>\r\n\r\nserved by %s\r\n", user, d.name, d.name, d.name)
	if err := os.WriteFile(path, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(maildir)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := ownerOf(fi)
	if err := os.Lchown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// restart starts d again on its address, after stop.
func (d *routeDovecot) restart(t *testing.T) {
	t.Helper()
	p, err := startProc("dovecot", filepath.Join(d.dir, "dovecot.out"), nil, nil, 0, "dovecot", "-F", "-c", d.conf)
	if err != nil {
		t.Fatal(err)
	}
	d.proc = p
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := waitPort(ctx, d.addr, p); err != nil {
		t.Fatal(err)
	}
}

// routeHealth is the pools' health check: fast, so that a stopped member is marked down
// within a second.
const routeHealth = "health_check: {interval: 200ms, timeout: 1s, fall: 1, rise: 1}"

// reach logs in as login (alice or bob) through g and returns the server whose message the
// INBOX holds, or "" and the tagged reply of a refused login.
func (e *env) reach(t *testing.T, g *gate, login string) (server, reply string) {
	t.Helper()
	user := map[string]string{"alice": mailUser, "bob": mailUser2}[login]
	w := dialWire(t, g.imaps, e.tlsConfig())
	defer w.conn.Close()
	w.greeting()
	w.send("a AUTHENTICATE OAUTHBEARER " + oauthBearerIR(user, "", 0, e.grantToken(t, login)))
	if _, tagged := w.untilTagged("a"); !strings.HasPrefix(tagged, "a OK") {
		return "", tagged
	}
	return w.servedBy(t), ""
}

// servedBy reads which server's message the INBOX of the logged-in session holds.
func (w *wire) servedBy(t *testing.T) string {
	t.Helper()
	w.send("s SELECT INBOX")
	w.expectTagged("s", "OK")
	w.send("f FETCH 1:* (ENVELOPE)")
	fetched, _ := w.expectTagged("f", "OK")
	all := strings.Join(fetched, "\n")
	for _, name := range []string{"d1", "d2"} {
		if strings.Contains(all, "<"+name+"@route.e2e>") {
			return name
		}
	}
	t.Fatalf("the INBOX holds no server's message: %q", fetched)
	return ""
}

// logHas reports whether the log has a line, after offset from, containing every one of parts.
func logHas(path string, from int64, parts ...string) bool {
	b, _ := os.ReadFile(path)
	if int64(len(b)) <= from {
		return false
	}
	for _, line := range strings.Split(string(b[from:]), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// waitLogLine waits until the gate's log has a line containing every one of parts.
func waitLogLine(t *testing.T, path string, from int64, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if logHas(path, from, parts...) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in %s:\n%s", parts, filepath.Base(path), tail(path, 4<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRoutingStatic: a static map routes alice to d2 by name and bob's domain to a pool of d1;
// `saslgate route` and `saslgate check --user` follow the same route; a changed map moves new
// logins but not a session already spliced; a member stopped fails only its users with
// NO [UNAVAILABLE], and they come back when it does; answers naming a server no pool lists, or
// a pool that does not exist, fail with NO [UNAVAILABLE] and a log line saying why.
func TestRoutingStatic(t *testing.T) {
	e := e2e(t)
	c := e.startCluster(t)
	routes := filepath.Join(e.dir, t.Name(), "routes")
	writeRoutes := func(s string) {
		t.Helper()
		// A new mtime second, so the source sees the change whatever the file system's clock
		// granularity.
		if err := os.WriteFile(routes, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		future := time.Now().Add(time.Duration(time.Now().UnixNano()%7+2) * time.Second)
		os.Chtimes(routes, future, future)
	}
	writeRoutes(fmt.Sprintf("%s %s\n@example.com one\n", mailUser, c.d2.addr))
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-static",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		imap:    "pool: shard",
		extra: fmt.Sprintf(`pools:
  - {name: shard, protocol: imap, tls: none, timeout: 30s, members: [{address: %q}, {address: %q}], %s}
  - {name: one, protocol: imap, tls: none, timeout: 30s, members: [{address: %q}], %s}
routes:
  cache_ttl: 1s
  sources:
    - static: {file: %q}
`, c.d1.addr, c.d2.addr, routeHealth, c.d1.addr, routeHealth, routes),
	})
	if got, reply := e.reach(t, g, "alice"); got != "d2" {
		t.Fatalf("alice reached %q (%s), want d2 (static map, by server)", got, reply)
	}
	if got, reply := e.reach(t, g, "bob"); got != "d1" {
		t.Fatalf("bob reached %q (%s), want d1 (static map, @example.com → pool one)", got, reply)
	}

	out, err := runCmd(t, "", filepath.Join(e.dir, "saslgate"), "route", "--config", g.conf, mailUser)
	if want := "imap " + mailUser + " → imap pool shard, member " + c.d2.addr + " (route from static)"; err != nil || !strings.Contains(out, want) {
		t.Errorf("saslgate route: %v\n%s\nwant a line with %q", err, out, want)
	}
	out, err = runCmd(t, "", filepath.Join(e.dir, "saslgate"), "check", "--config", g.conf, "--user", mailUser)
	if want := "OK   login     imap backend " + c.d2.addr + " accepts " + mailUser; err != nil || !strings.Contains(out, want) {
		t.Errorf("saslgate check --user: %v\n%s\nwant a line with %q", err, out, want)
	}

	// A session spliced to d2 stays there when the map moves alice to d1.
	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	e.login(t, w, "a", e.grantToken(t, "alice"))
	if got := w.servedBy(t); got != "d2" {
		t.Fatalf("alice's first session is on %s, want d2", got)
	}
	writeRoutes(fmt.Sprintf("%s %s\n@example.com one\n", mailUser, c.d1.addr))
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, reply := e.reach(t, g, "alice")
		if got == "d1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the map moved alice to d1, she still reaches %q (%s)", got, reply)
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.send("n NOOP")
	w.expectTagged("n", "OK")
	if got := w.servedBy(t); got != "d2" {
		t.Errorf("the spliced session moved to %s after the map changed", got)
	}
	w.send("z LOGOUT")
	w.expectTagged("z", "OK")

	// d2 stopped: alice, routed there, gets NO [UNAVAILABLE]; bob, on d1, is not disturbed.
	writeRoutes(fmt.Sprintf("%s %s\n@example.com one\n", mailUser, c.d2.addr))
	time.Sleep(2500 * time.Millisecond) // the map's recheck and the route cache
	from := fileSize(t, g.log)
	c.d2.proc.stop()
	waitLogLine(t, g.log, from, "backend member down", "member="+c.d2.addr)
	if got, reply := e.reach(t, g, "alice"); got != "" || !strings.HasPrefix(reply, "a NO [UNAVAILABLE]") {
		t.Errorf("alice with d2 down: reached %q, reply %q; want NO [UNAVAILABLE]", got, reply)
	}
	waitLogLine(t, g.log, from, "outcome=backend_unavailable", "member "+c.d2.addr+" is down")
	if got, reply := e.reach(t, g, "bob"); got != "d1" {
		t.Errorf("bob with d2 down reached %q (%s), want d1", got, reply)
	}
	from = fileSize(t, g.log)
	c.d2.restart(t)
	waitLogLine(t, g.log, from, "backend member up", "member="+c.d2.addr)
	if got, reply := e.reach(t, g, "alice"); got != "d2" {
		t.Errorf("alice after d2 came back reached %q (%s), want d2", got, reply)
	}

	// Unusable answers: a server no pool lists, a pool that does not exist.
	for _, bad := range []struct{ target, log string }{
		{"evil.example.net:143", "server evil.example.net:143 is not a member of any imap pool"},
		{"nosuch", `pool \"nosuch\" is not among the imap pools`},
	} {
		writeRoutes(fmt.Sprintf("%s %s\n", mailUser, bad.target))
		e.untilRefused(t, g, "alice", bad.log)
	}
}

// TestRoutingHash: rendezvous hashing over a pool of d1 and d2: every login of a user lands on
// the same member; when it stops, its users move to the other (which serves the same
// mailboxes here) and the other member's users stay; when it returns, they move back.
func TestRoutingHash(t *testing.T) {
	e := e2e(t)
	c := e.startCluster(t)
	admin, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-hash",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		imap:    "pool: shard",
		extra: fmt.Sprintf(`pools:
  - {name: shard, protocol: imap, tls: none, timeout: 30s, members: [{address: %q}, {address: %q}], %s}
routes:
  sources: [{hash: {}}]
admin: {address: %s}
`, c.d1.addr, c.d2.addr, routeHealth, admin),
	})
	home := map[string]string{}
	for _, login := range []string{"alice", "bob"} {
		for i := range 3 {
			got, reply := e.reach(t, g, login)
			if got == "" || i > 0 && got != home[login] {
				t.Fatalf("%s login %d reached %q (%s), before %q: want one member every time", login, i, got, reply, home[login])
			}
			home[login] = got
		}
	}
	byName := map[string]*routeDovecot{"d1": c.d1, "d2": c.d2}
	// Each member's logins are counted under its address: alice's three on hers.
	logins := scrape(t, admin)
	if n := metricValue(logins, "saslgate_backend_member_logins_total", fmt.Sprintf(`member=%q,pool="shard",protocol="imap",result="success"`, byName[home["alice"]].addr)); n < 3 {
		t.Errorf("%s's successful logins in saslgate_backend_member_logins_total: %v, want at least alice's 3", home["alice"], n)
	}
	if n := metricValue(logins, "saslgate_backend_member_logins_total", `result="success"`); n != 6 {
		t.Errorf("successful member logins: %v, want 6", n)
	}
	down := byName[home["alice"]]
	other := map[string]string{"d1": "d2", "d2": "d1"}[down.name]
	from := fileSize(t, g.log)
	down.proc.stop()
	waitLogLine(t, g.log, from, "backend member down", "member="+down.addr)
	if got, reply := e.reach(t, g, "alice"); got != other {
		t.Errorf("alice with %s down reached %q (%s), want %s", down.name, got, reply, other)
	}
	if home["bob"] != down.name {
		if got, _ := e.reach(t, g, "bob"); got != home["bob"] {
			t.Errorf("bob, whose member stayed up, moved from %s to %q", home["bob"], got)
		}
	}
	from = fileSize(t, g.log)
	down.restart(t)
	waitLogLine(t, g.log, from, "backend member up", "member="+down.addr)
	if got, reply := e.reach(t, g, "alice"); got != home["alice"] {
		t.Errorf("alice after %s came back reached %q (%s), want it again", down.name, got, reply)
	}
}

// TestRoutingHTTP: nginx's auth_http protocol, with a responder run by the test: it gets the
// validated user and never the token, routes alice to d2, refuses bob; 8 concurrent logins
// and 4 more of alice make one request (coalesced, then cached); an answer naming a pool that
// does not exist, or a malformed server, fails with NO [UNAVAILABLE].
func TestRoutingHTTP(t *testing.T) {
	e := e2e(t)
	c := e.startCluster(t)
	_, d2port, _ := net.SplitHostPort(c.d2.addr)
	var mu sync.Mutex
	var requests []http.Header
	bobAnswer := http.Header{"Auth-Status": {"Invalid login or password"}}
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Header.Clone())
		answer := bobAnswer
		mu.Unlock()
		if r.Header.Get("Auth-User") == mailUser {
			time.Sleep(100 * time.Millisecond) // the concurrent logins queue behind this one
			answer = http.Header{"Auth-Status": {"OK"}, "Auth-Server": {"127.0.0.1"}, "Auth-Port": {d2port}}
		}
		for k, v := range answer {
			w.Header()[k] = v
		}
	}))
	defer responder.Close()
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-http",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		imap:    "pool: shard",
		extra: fmt.Sprintf(`pools:
  - {name: shard, protocol: imap, tls: none, timeout: 30s, members: [{address: %q}, {address: %q}], %s}
routes:
  cache_ttl: 5s
  sources: [{http: {url: %q, headers: {X-Auth-Key: e2e}}}]
`, c.d1.addr, c.d2.addr, routeHealth, responder.URL+"/auth"),
	})
	var wg sync.WaitGroup
	got := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			s, reply := e.reach(t, g, "alice")
			got <- s + reply
		})
	}
	wg.Wait()
	close(got)
	for s := range got {
		if s != "d2" {
			t.Errorf("a concurrent alice login reached %q, want d2", s)
		}
	}
	for range 4 {
		if s, reply := e.reach(t, g, "alice"); s != "d2" {
			t.Errorf("alice reached %q (%s), want d2", s, reply)
		}
	}
	mu.Lock()
	n := len(requests)
	first := requests[0]
	mu.Unlock()
	if n != 1 {
		t.Errorf("12 logins of alice made %d responder requests, want 1", n)
	}
	tok := e.grantToken(t, "alice")
	for k, v := range map[string]string{"Auth-User": mailUser, "Auth-Protocol": "imap", "Auth-Method": "external",
		"Auth-Sasl-Mechanism": "OAUTHBEARER", "Client-Ip": "127.0.0.1", "Auth-Login-Attempt": "1", "X-Auth-Key": "e2e"} {
		if first.Get(k) != v {
			t.Errorf("request header %s = %q, want %q", k, first.Get(k), v)
		}
	}
	for k, vs := range first {
		for _, v := range vs {
			if strings.Contains(v, tok) || strings.Contains(v, tok[:40]) {
				t.Errorf("request header %s carries the token", k)
			}
		}
	}

	from := fileSize(t, g.log)
	if s, reply := e.reach(t, g, "bob"); s != "" || !strings.HasPrefix(reply, "a NO [UNAVAILABLE]") {
		t.Errorf("bob refused by the responder: reached %q, %q; want NO [UNAVAILABLE]", s, reply)
	}
	waitLogLine(t, g.log, from, "outcome=backend_rejected", `Auth-Status \"Invalid login or password\"`)
	for _, bad := range []struct {
		answer http.Header
		log    string
	}{
		{http.Header{"Auth-Status": {"OK"}, "Auth-Pool": {"nosuch"}}, `pool \"nosuch\" is not among the imap pools`},
		{http.Header{"Auth-Status": {"OK"}, "Auth-Server": {"127.0.0.1 evil"}, "Auth-Port": {"143"}}, "unusable route"},
	} {
		mu.Lock()
		bobAnswer = bad.answer
		mu.Unlock()
		e.untilRefused(t, g, "bob", bad.log) // once the last answer's cache entry expires
	}
}

// ownerOf is the owner of fi's file.
func ownerOf(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// untilRefused logs in as login until a login gets NO [UNAVAILABLE] with a log line naming
// why (a changed route shows once its cache entry expires); any other refusal, or a login
// that keeps succeeding for 15 s, fails the test.
func (e *env) untilRefused(t *testing.T, g *gate, login, why string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		from := fileSize(t, g.log)
		got, reply := e.reach(t, g, login)
		if got == "" && !strings.HasPrefix(reply, "a NO [UNAVAILABLE]") {
			t.Fatalf("%s: %q, want NO [UNAVAILABLE] (%s)", login, reply, why)
		}
		if got == "" {
			time.Sleep(100 * time.Millisecond) // the log line follows the reply
			if logHas(g.log, from, "outcome=backend_unavailable", why) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no NO [UNAVAILABLE] logged with %q; last: reached %q, %q\n%s", login, why, got, reply, tail(g.log, 3<<10))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRoutingLDAP: an LDAP directory (slapd, started by the test, searched over StartTLS with
// a bind DN) names each user's server in mailHost: alice reaches d2; bob's mailHost carries
// CR LF and a command, which is refused as an unusable route; with the directory down alice
// gets NO [UNAVAILABLE] (never the default pool), and reaches d2 again when it is back.
func TestRoutingLDAP(t *testing.T) {
	e := e2e(t)
	c := e.startCluster(t)
	dir := filepath.Join(e.dir, t.Name(), "slapd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	evil := base64.StdEncoding.EncodeToString([]byte(c.d1.addr + "\r\nA1 LOGIN x y"))
	ldif := fmt.Sprintf(`dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: cn=saslgate,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: saslgate
userPassword: {{bindpw}}

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: Alice
mail: %s
mailHost: %s

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: bob
cn: Bob
sn: Bob
mail: %s
mailHost:: %s
`, mailUser, c.d2.addr, mailUser2, evil)
	s := startSlapd(t, dir, ldif)
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-ldap",
		issuers: []string{jwtIssuer(e.idp.issuer)},
		imap:    "pool: shard",
		extra: fmt.Sprintf(`pools:
  - {name: shard, protocol: imap, tls: none, timeout: 30s, members: [{address: %q}, {address: %q}], %s}
routes:
  cache_ttl: 1s
  timeout: 3s
  sources:
    - ldap: {url: %q, start_tls: true, ca_file: %q, bind_dn: %q, bind_password_file: %q,
             base_dn: "ou=people,dc=example,dc=com", filter: "(&(objectClass=inetLocalMailRecipient)(mail=%%u))"}
`, c.d1.addr, c.d2.addr, routeHealth, s.url, s.caFile, slapdBindDN, filepath.Join(dir, "bindpw")),
	})
	if got, reply := e.reach(t, g, "alice"); got != "d2" {
		t.Fatalf("alice reached %q (%s), want d2 (her mailHost)", got, reply)
	}
	e.untilRefused(t, g, "bob", "unusable route")
	if b, _ := os.ReadFile(g.log); strings.Contains(string(b), "\nA1 LOGIN") || strings.Contains(string(b), "\rA1 LOGIN") {
		t.Error("the log carries bob's mailHost with a raw line break")
	}
	s.stop()
	e.untilRefused(t, g, "alice", "route source ldap failed")
	s.start()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, reply := e.reach(t, g, "alice")
		if got == "d2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice after the directory came back: %q (%s), want d2", got, reply)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
