//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type report struct {
	w       *world
	started time.Time
	failure error

	bulk    []bulkResult
	logins  []loginResult
	noops   []noopResult
	idle    []idleResult
	profile *profileResult
}

func (r *report) targets() (direct, ngx, sg, sgNoCache target) {
	w := r.w
	return target{label: "direct (Dovecot imaps)", addr: w.dovecot.tls, auth: authDirect},
		target{label: "nginx mail proxy", addr: w.nginx.addr, auth: authPass, proxy: w.nginx.proc},
		target{label: "saslgate", addr: w.gate.addr, auth: authBearer, proxy: w.gate.proc},
		target{label: "saslgate, cache off", addr: w.gateNoCache.addr, auth: authBearer, proxy: w.gateNoCache.proc}
}

// floorLabel names the rows of `imapbench floor`, the least a Go gateway does.
const floorLabel = "Go floor (bench/internal/floor)"

func (r *report) floorTarget() target {
	return target{label: floorLabel, addr: r.w.floor.addr, auth: authBearer, proxy: r.w.floor.proc}
}

// collect runs the measurements: bulk, logins, NOOP, then the idle sessions
// on freshly started proxies, then (optionally) the profiles.
func (r *report) collect(ctx context.Context) error {
	w := r.w
	direct, ngx, sg, sgNC := r.targets()
	fl := r.floorTarget()
	var err error

	if w.cfg.phase("bulk") {
		progress("1/4 bulk FETCH: %d passes × %.0f MB per path", w.cfg.passes, float64(w.bulkBytes)/1e6)
		if r.bulk, err = w.runBulk(ctx, []target{direct, ngx, sg, fl}, w.cfg.passes); err != nil {
			return err
		}
	}

	if w.cfg.phase("login") {
		// Resumed logins for saslgate only; markdown says why not nginx and
		// direct.
		cases := []loginCase{{direct, true, false}, {ngx, true, false}, {sg, true, false},
			{direct, false, false}, {ngx, false, false}, {sg, false, false}, {sgNC, false, false},
			{sg, false, true}, {fl, false, false}}
		for _, conc := range []int{1, w.cfg.conc} {
			r.logins = append(r.logins, w.runLogins(ctx, cases, conc, w.cfg.loginDur, 4)...)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}

	if w.cfg.phase("noop") {
		progress("4/4 NOOP round trips")
		plain := target{label: "Dovecot plaintext port (no TLS; the proxies' backend hop)", addr: w.dovecot.plain, auth: authDirect, plain: true}
		if r.noops, err = w.runNoops(ctx, []target{direct, ngx, sg, plain}, w.cfg.noops); err != nil {
			return err
		}
	}

	if !w.cfg.phase("idle") {
		return r.collectProfiles(ctx)
	}
	progress("3/4 idle: restarting nginx, %d sessions", w.cfg.sessions)
	if err := w.nginx.restart(ctx, w); err != nil {
		return err
	}
	_, ngx, _, _ = r.targets()
	ir, err := w.runIdle(ctx, ngx, w.cfg.sessions, w.cfg.conc, w.cfg.settle, nil)
	r.idle = append(r.idle, ir)
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // let Dovecot end the previous sessions
	progress("3/4 idle: restarting saslgate, %d sessions", w.cfg.sessions)
	if err := w.gate.restart(ctx, w); err != nil {
		return err
	}
	_, _, sg, _ = r.targets()
	ir, err = w.runIdle(ctx, sg, w.cfg.sessions, w.cfg.conc, w.cfg.settle, nil)
	r.idle = append(r.idle, ir)
	if err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	return r.collectProfiles(ctx)
}

func (r *report) collectProfiles(ctx context.Context) error {
	if !r.w.cfg.phase("profile") {
		return nil
	}
	var err error
	if r.profile, err = r.w.runProfiles(ctx); err != nil {
		return fmt.Errorf("profiling: %w", err)
	}
	return nil
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w := r.w
	p("## Results (%s, %s)", r.started.Format("2006-01-02 15:04 MST"), time.Since(r.started).Round(time.Second))
	p("")
	p("Machine: %s.", machine())
	p("Software: saslgate %s (%s), nginx %s, Dovecot %s.", gitRev(w.cfg.root), runtime.Version(), nginxVersion(), dovecotVersion())
	p("")
	p("Everything runs on this one machine over 127.0.0.1: the load-generating clients, the issuer, nginx's")
	p("auth_http responder (all in the bench process), the proxy and Dovecot share the same cores, so absolute")
	p("figures are lower than on separate hosts; the ratios are the point. Client connections: %s, ECDSA P-256", r.suite())
	p("certificate, a full handshake on every connection except in the \"resumed TLS\" login rows, whose clients resume")
	p("TLS 1.3 sessions with tickets (section 2). The proxies speak plaintext IMAP to Dovecot on loopback.")
	p("Paths: **direct** = Dovecot's own imaps port (imap-login terminates TLS), LOGIN with the user's backend secret;")
	p("**nginx** = nginx mail proxy, LOGIN user/password (the admins' current setup: nginx cannot do OAUTHBEARER), auth_http")
	p("answers with Dovecot's address and the HMAC-derived backend secret; **saslgate** = `saslgate serve`, AUTHENTICATE")
	p("OAUTHBEARER with an RS256 JWT (validated locally against the issuer's JWKS), backend AUTHENTICATE PLAIN with the")
	p("HMAC-derived secret, log level info. Dovecot runs login and imap processes in high-performance mode (no fork per login).")
	p("CPU is utime+stime from /proc (proxy: its process group; Dovecot: all its processes; client: the bench process;")
	p("machine: all CPUs from /proc/stat; other load: the share of all CPUs used by processes outside the bench during")
	p("the window, i.e. other users of the machine — figures from windows with much other load are disturbed). MB = 10^6 bytes.")
	p("nginx's mail module leaves Nagle on for client connections, so the config sets `ssl_conf_command NumTickets 0`:")
	p("otherwise OpenSSL's two TLS 1.3 session tickets hold the greeting back for the client's delayed ACK (+40 ms per login).")
	p("Only saslgate has a \"resumed TLS\" row. nginx needs tickets to resume TLS 1.3 and, Nagle being on, then pays")
	p("that delay on every resumed login (a trial with one ticket: p50 48.5 ms, 20 logins/s with 1 client, against 3.3 ms")
	p("and 263/s with full handshakes), which measures the delayed ACK, not the handshake. Dovecot's imap-login processes")
	p("(2 here, each with its own OpenSSL ticket key) resumed 42–53%% of the logins in that trial: mostly full handshakes.")
	p("")
	r.summary(p)
	r.floorSummary(p)
	r.bulkTable(p)
	r.loginTable(p)
	r.idleTable(p)
	r.noopTable(p)
	r.profileSection(p)
	if r.failure != nil {
		p("**The run stopped early:** %v", r.failure)
	}
	return b.String()
}

func (r *report) suite() string {
	if len(r.bulk) == 0 {
		return "TLS"
	}
	seen := map[string]bool{}
	var s []string
	for _, b := range r.bulk {
		if !seen[b.suite] {
			seen[b.suite] = true
			s = append(s, b.suite)
		}
	}
	return strings.Join(s, " / ")
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (b bulkResult) mbps() float64 { return float64(b.bytes) / 1e6 / b.cost.wall.Seconds() }
func (b bulkResult) perGB(d time.Duration) float64 {
	return d.Seconds() / (float64(b.bytes) / 1e9)
}
func (l loginResult) rate() float64 { return float64(l.n) / l.cost.wall.Seconds() }
func (l loginResult) perLogin(d time.Duration) float64 {
	if l.n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / 1000 / float64(l.n)
}

func (r *report) login(label string, conc int, handshakeOnly, resume bool) (loginResult, bool) {
	for _, l := range r.logins {
		if l.target.label == label && l.conc == conc && l.handshakeOnly == handshakeOnly && l.resume == resume {
			return l, true
		}
	}
	return loginResult{}, false
}

func (r *report) summary(p func(string, ...any)) {
	if len(r.bulk) < 3 {
		return
	}
	d, n, s := r.bulk[0], r.bulk[1], r.bulk[2]
	p("### Summary against the goals of issue #8")
	p("")
	p("| measure | saslgate | nginx | direct | saslgate / direct | saslgate / nginx | goal met |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
	p("| bulk FETCH MB/s | %.0f | %.0f | %.0f | %s | %s | %s (≥ 0.9× direct and ≥ nginx) |", s.mbps(), n.mbps(), d.mbps(),
		ratio(s.mbps(), d.mbps()), ratio(s.mbps(), n.mbps()), verdict(s.mbps() >= 0.9*d.mbps() && s.mbps() >= n.mbps()))
	p("| proxy CPU s/GB | %.2f | %.2f | – | – | %s | |", s.perGB(s.cost.proxy), n.perGB(n.cost.proxy), ratio(s.perGB(s.cost.proxy), n.perGB(n.cost.proxy)))
	for _, conc := range []int{1, r.w.cfg.conc} {
		sl, ok1 := r.login("saslgate", conc, false, false)
		nl, ok2 := r.login("nginx mail proxy", conc, false, false)
		dl, ok3 := r.login("direct (Dovecot imaps)", conc, false, false)
		su, ok4 := r.login("saslgate, cache off", conc, false, false)
		sh, ok5 := r.login("saslgate", conc, true, false)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			continue
		}
		p("| logins/s, %d client(s), cache on | %.0f | %.0f | %.0f | %s | %s | |", conc, sl.rate(), nl.rate(), dl.rate(), ratio(sl.rate(), dl.rate()), ratio(sl.rate(), nl.rate()))
		p("| logins/s, %d client(s), cache off | %.0f | %.0f | %.0f | %s | %s | |", conc, su.rate(), nl.rate(), dl.rate(), ratio(su.rate(), dl.rate()), ratio(su.rate(), nl.rate()))
		if conc > 1 {
			hs := sh.perLogin(sh.cost.proxy)
			lo := sl.perLogin(sl.cost.proxy)
			lu := su.perLogin(su.cost.proxy)
			p("| saslgate CPU ms per login (cache on / off) vs per bare TLS handshake+greeting | %.2f / %.2f | | | | | handshake %.2f ms = %.0f%% / %.0f%% of a login |",
				lo, lu, hs, 100*hs/lo, 100*hs/lu)
		}
		r.resumedSummary(p, conc, sl)
	}
	if len(r.idle) == 2 {
		ni, si := r.idle[0], r.idle[1]
		p("| idle RSS KiB/session | %.1f | %.1f | – | – | %s | %s (≤ nginx) |", si.proxyPerSession/1024, ni.proxyPerSession/1024,
			ratio(si.proxyPerSession, ni.proxyPerSession), verdict(si.proxyPerSession <= ni.proxyPerSession))
	}
	if len(r.noops) >= 3 {
		dn, nn, sn := r.noops[0], r.noops[1], r.noops[2]
		p("| NOOP round trip p50 µs | %d | %d | %d | %s | %s | added vs direct: saslgate %+d µs, nginx %+d µs |",
			sn.p50.Microseconds(), nn.p50.Microseconds(), dn.p50.Microseconds(),
			ratio(float64(sn.p50), float64(dn.p50)), ratio(float64(sn.p50), float64(nn.p50)),
			(sn.p50 - dn.p50).Microseconds(), (nn.p50 - dn.p50).Microseconds())
	}
	p("")
}

// resumedSummary adds saslgate's resumed-TLS row of conc clients to the summary, against
// its full-handshake row of the same run (full); nginx and direct have none (markdown).
// A resumed row that mostly did full handshakes is left out.
func (r *report) resumedSummary(p func(string, ...any), conc int, full loginResult) {
	s, ok := r.login("saslgate", conc, false, true)
	if !ok || s.resumedShare() < mostlyResumed {
		return
	}
	p("| logins/s, %d client(s), resumed TLS, cache on | %.0f | – | – | – | – | saslgate resumed / full: %s |", conc,
		s.rate(), ratio(s.rate(), full.rate()))
	if conc > 1 {
		p("| saslgate CPU ms per login, resumed TLS vs full handshake (cache on) | %.2f / %.2f | | | | | resumed = %.0f%% of a full one |",
			s.perLogin(s.cost.proxy), full.perLogin(full.cost.proxy), 100*s.perLogin(s.cost.proxy)/full.perLogin(full.cost.proxy))
	}
}

// floorSummary sets saslgate against `imapbench floor` and the targets of issue #20: a
// target the floor misses too is below what a Go gateway spends on this machine.
func (r *report) floorSummary(p func(string, ...any)) {
	var s, n, f bulkResult
	for _, b := range r.bulk {
		switch b.target.label {
		case "saslgate":
			s = b
		case "nginx mail proxy":
			n = b
		case floorLabel:
			f = b
		}
	}
	conc := r.w.cfg.conc
	sl, ok1 := r.login("saslgate", conc, false, false)
	su, ok2 := r.login("saslgate, cache off", conc, false, false)
	nl, ok3 := r.login("nginx mail proxy", conc, false, false)
	fl, ok4 := r.login(floorLabel, conc, false, false)
	haveBulk, haveLogin := f.bytes > 0 && s.bytes > 0 && n.bytes > 0, ok1 && ok2 && ok3 && ok4
	if !haveBulk && !haveLogin {
		return
	}
	p("### Against the Go floor (issue #20)")
	p("")
	p("The **Go floor** (`imapbench floor`, bench/internal/floor) makes saslgate's exchange with nothing else: TLS with")
	p("the same certificate, the greeting, the user taken from the OAUTHBEARER initial response without validating the")
	p("token, Dovecot's AUTHENTICATE PLAIN with the HMAC-derived secret, then a copy both ways, 64 KiB per read, the")
	p("records of each write in one write(2). Its CPU is that of crypto/tls, the Go runtime and the kernel for these")
	p("bytes, with no code of saslgate's; a target the floor misses too is beyond what saslgate's own code can reach here.")
	p("")
	p("| measure | saslgate | Go floor | saslgate / floor | issue #20 target | floor meets it |")
	p("| --- | ---: | ---: | ---: | --- | --- |")
	if haveBulk {
		sg, fg := s.perGB(s.cost.proxy), f.perGB(f.cost.proxy)
		p("| proxy CPU s/GB, bulk FETCH | %.2f | %.2f | %s | ≤ 0.70 | %s |", sg, fg, ratio(sg, fg), verdict(fg <= 0.7))
		p("| bulk MB/s ÷ nginx's | %.2f× | %.2f× | %s | ≥ 2× | %s |", s.mbps()/n.mbps(), f.mbps()/n.mbps(), ratio(s.mbps(), f.mbps()),
			verdict(f.mbps() >= 2*n.mbps()))
	}
	if haveLogin {
		lo, lu, lf := sl.perLogin(sl.cost.proxy), su.perLogin(su.cost.proxy), fl.perLogin(fl.cost.proxy)
		p("| proxy CPU ms per login, %d clients, cache on | %.2f | %.2f | %s | ≤ 0.50 | %s |", conc, lo, lf, ratio(lo, lf), verdict(lf <= 0.5))
		p("| proxy CPU ms per login, %d clients, cache off (fresh RS256 token) | %.2f | %.2f | %s | ≤ 0.70 | %s |", conc, lu, lf, ratio(lu, lf), verdict(lf <= 0.7))
		p("| logins/s ÷ nginx's, %d clients | %.2f× | %.2f× | %s | ≥ 1.5× | %s |", conc, sl.rate()/nl.rate(), fl.rate()/nl.rate(),
			ratio(sl.rate(), fl.rate()), verdict(fl.rate() >= 1.5*nl.rate()))
	}
	p("")
}

func (r *report) bulkTable(p func(string, ...any)) {
	if len(r.bulk) == 0 {
		return
	}
	w := r.w
	p("### 1. Bulk throughput: `FETCH 1:* BODY.PEEK[]`, %d messages × %d MiB, %d passes per path (interleaved)", w.cfg.bulkMessages, w.cfg.msgBytes>>20, w.cfg.passes)
	p("")
	p("| path | MB | MB/s | proxy CPU s/GB | Dovecot CPU s/GB | client CPU s/GB | machine CPU s/GB | other load |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, b := range r.bulk {
		proxy := "–"
		if b.target.proxy != nil {
			proxy = fmt.Sprintf("%.2f", b.perGB(b.cost.proxy))
		}
		p("| %s | %.0f | %.0f | %s | %.2f | %.2f | %.2f | %.0f%% |", b.target.label, float64(b.bytes)/1e6, b.mbps(), proxy,
			b.perGB(b.cost.backend), b.perGB(b.cost.client), b.perGB(b.cost.machine), 100*b.cost.foreign())
	}
	if len(r.bulk) >= 3 {
		d, n, s := r.bulk[0], r.bulk[1], r.bulk[2]
		p("| saslgate / direct | | %s | | | | %s | |", ratio(s.mbps(), d.mbps()), ratio(s.perGB(s.cost.machine), d.perGB(d.cost.machine)))
		p("| saslgate / nginx | | %s | %s | | | %s | |", ratio(s.mbps(), n.mbps()), ratio(s.perGB(s.cost.proxy), n.perGB(n.cost.proxy)),
			ratio(s.perGB(s.cost.machine), n.perGB(n.cost.machine)))
	}
	p("")
}

func (r *report) loginTable(p func(string, ...any)) {
	if len(r.logins) == 0 {
		return
	}
	p("### 2. Login rate: connect + TLS handshake + login + LOGOUT, %s per row (4 interleaved rounds)", r.w.cfg.loginDur)
	p("")
	p("\"handshake only\" rows connect, handshake, read the greeting and close: the TLS ceiling of each server.")
	p("\"resumed TLS\" rows are returning clients: each client keeps a TLS session cache for the whole run, so every")
	p("measured login resumes a TLS 1.3 session with the ticket of that client's previous one (psk_dhe_ke: X25519")
	p("still runs, the certificate signature and its check do not); the other rows do a full handshake every time.")
	p("\"resumed\" is the share of logins whose handshake resumed (`ConnectionState().DidResume`); a resumed row")
	p("under %.0f%% is marked and left out of the summary: it measured mostly full handshakes.", 100*mostlyResumed)
	p("Latency runs from connect to LOGOUT's tagged OK. CPU columns are per login.")
	p("")
	p("| path | clients | logins/s | p50 ms | p99 ms | proxy CPU ms | Dovecot CPU ms | client CPU ms | machine CPU ms | other load | resumed | errors |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, l := range r.logins {
		label := rowLabel(l.target, l.handshakeOnly, l.resume)
		resumed := fmt.Sprintf("%.0f%%", 100*l.resumedShare())
		if l.resume && l.resumedShare() < mostlyResumed {
			resumed = fmt.Sprintf("**%s** (mostly full handshakes)", resumed)
		}
		proxy := "–"
		if l.target.proxy != nil {
			proxy = fmt.Sprintf("%.2f", l.perLogin(l.cost.proxy))
		}
		errs := fmt.Sprint(l.errs)
		if l.firstErr != nil {
			errs += fmt.Sprintf(" (%.80s)", l.firstErr)
		}
		p("| %s | %d | %.0f | %.2f | %.2f | %s | %.2f | %.2f | %.2f | %.0f%% | %s | %s |", label, l.conc, l.rate(),
			ms(l.p50), ms(l.p99), proxy, l.perLogin(l.cost.backend), l.perLogin(l.cost.client), l.perLogin(l.cost.machine),
			100*l.cost.foreign(), resumed, errs)
	}
	for _, conc := range []int{1, r.w.cfg.conc} {
		s, ok1 := r.login("saslgate", conc, false, false)
		su, ok2 := r.login("saslgate, cache off", conc, false, false)
		n, ok3 := r.login("nginx mail proxy", conc, false, false)
		d, ok4 := r.login("direct (Dovecot imaps)", conc, false, false)
		if ok1 && ok2 && ok3 && ok4 {
			p("| saslgate / direct (cache on, off) | %d | %s, %s | %s, %s | %s, %s | | | | | | | |", conc,
				ratio(s.rate(), d.rate()), ratio(su.rate(), d.rate()), ratio(ms(s.p50), ms(d.p50)), ratio(ms(su.p50), ms(d.p50)),
				ratio(ms(s.p99), ms(d.p99)), ratio(ms(su.p99), ms(d.p99)))
			p("| saslgate / nginx (cache on, off) | %d | %s, %s | %s, %s | %s, %s | %s, %s | | | | | | |", conc,
				ratio(s.rate(), n.rate()), ratio(su.rate(), n.rate()), ratio(ms(s.p50), ms(n.p50)), ratio(ms(su.p50), ms(n.p50)),
				ratio(ms(s.p99), ms(n.p99)), ratio(ms(su.p99), ms(n.p99)),
				ratio(s.perLogin(s.cost.proxy), n.perLogin(n.cost.proxy)), ratio(su.perLogin(su.cost.proxy), n.perLogin(n.cost.proxy)))
		}
		sr, ok5 := r.login("saslgate", conc, false, true)
		if ok1 && ok5 {
			p("| saslgate resumed / saslgate full (cache on) | %d | %s | %s | %s | %s | | | | | | |", conc,
				ratio(sr.rate(), s.rate()), ratio(ms(sr.p50), ms(s.p50)), ratio(ms(sr.p99), ms(s.p99)),
				ratio(sr.perLogin(sr.cost.proxy), s.perLogin(s.cost.proxy)))
		}
	}
	p("")
}

func (r *report) idleTable(p func(string, ...any)) {
	rows := r.idle
	if r.profile != nil && r.profile.idle.n > 0 {
		rows = append(rows, r.profile.idle)
	}
	if len(rows) == 0 {
		return
	}
	p("### 3. Idle sessions: %d sessions logged in, INBOX selected, in IDLE for %s; each proxy freshly started", r.w.cfg.sessions, r.w.cfg.settle)
	p("")
	if note := r.w.cfg.fileLimitNote; note != "" {
		p("**%s.**", note)
		p("")
	}
	p("| path | sessions | opened in | proxy RSS before | proxy RSS after | proxy KiB/session | Dovecot KiB/session |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for k, i := range rows {
		backend := fmt.Sprintf("%.1f", i.backendPerSession/1024)
		if k >= len(r.idle) { // the twin runs after the others; Dovecot is still releasing theirs
			backend = "–"
		}
		p("| %s | %d | %.1f s (%.0f/s) | %.1f MiB | %.1f MiB | %.1f | %s |", i.target.label, i.n, i.setup.Seconds(),
			float64(i.n)/i.setup.Seconds(), mib(i.before.proxy.rss), mib(i.after.proxy.rss), i.proxyPerSession/1024, backend)
	}
	if len(r.idle) == 2 {
		p("| saslgate / nginx | | | | | %s | |", ratio(r.idle[1].proxyPerSession, r.idle[0].proxyPerSession))
	}
	if pr := r.profile; pr != nil && pr.heapIdle.Goroutines > 0 {
		n := float64(pr.idle.n)
		e, f := pr.heapEmpty, pr.heapIdle
		p("")
		per := func(after, before uint64) float64 { return (float64(after) - float64(before)) / n }
		p("Go runtime view of the twin with the sessions open (after GC): heap in use %.1f KiB/session, goroutine stacks %.1f KiB/session, %.1f goroutines/session, %.0f heap objects/session.",
			per(f.HeapInuse, e.HeapInuse)/1024, per(f.StackInuse, e.StackInuse)/1024,
			float64(f.Goroutines-e.Goroutines)/n, per(f.HeapObjects, e.HeapObjects))
	}
	p("")
}

func (r *report) noopTable(p func(string, ...any)) {
	if len(r.noops) == 0 {
		return
	}
	p("### 4. Round trip per command: %d sequential NOOPs per path on one selected session (10 interleaved rounds)", r.w.cfg.noops)
	p("")
	p("Direct TLS goes through Dovecot's imap-login, which terminates TLS in a separate process and relays to the")
	p("imap process, so it is itself a proxied path; the plaintext row is Dovecot alone, the proxies' backend hop.")
	p("")
	p("| path | p50 µs | p90 µs | p99 µs | p50 added vs direct TLS | p50 added vs Dovecot plaintext |")
	p("| --- | ---: | ---: | ---: | ---: | ---: |")
	d, plain := r.noops[0], r.noops[len(r.noops)-1]
	for _, n := range r.noops {
		p("| %s | %d | %d | %d | %+d µs | %+d µs |", n.target.label, n.p50.Microseconds(), n.p90.Microseconds(), n.p99.Microseconds(),
			(n.p50 - d.p50).Microseconds(), (n.p50 - plain.p50).Microseconds())
	}
	if len(r.noops) >= 3 {
		p("| saslgate / direct | %s | %s | %s | | |", ratio(float64(r.noops[2].p50), float64(d.p50)), ratio(float64(r.noops[2].p90), float64(d.p90)), ratio(float64(r.noops[2].p99), float64(d.p99)))
		p("| saslgate / nginx | %s | %s | %s | | |", ratio(float64(r.noops[2].p50), float64(r.noops[1].p50)), ratio(float64(r.noops[2].p90), float64(r.noops[1].p90)), ratio(float64(r.noops[2].p99), float64(r.noops[1].p99)))
	}
	p("")
}

func (r *report) profileSection(p func(string, ...any)) {
	pr := r.profile
	if pr == nil {
		return
	}
	p("### Profiles (saslgate twin: same packages and wiring as `serve`, plus pprof)")
	p("")
	p("Saved in `%s` (open with `go tool pprof -http=: <file>`); top functions:", pr.dir)
	p("")
	for _, t := range pr.tops {
		p("**%s** (`%s`)", t.title, t.file)
		p("")
		p("```")
		p("%s", trimTop(t.top, 14))
		p("```")
		p("")
	}
}

// trimTop keeps pprof's header summary and the first n function rows.
func trimTop(s string, n int) string {
	var out []string
	rows := -1
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		switch {
		case strings.HasPrefix(l, "File:"), strings.HasPrefix(l, "Build ID:"), strings.HasPrefix(l, "Type:"), strings.HasPrefix(l, "Time:"):
			continue
		case strings.Contains(l, "flat%"):
			rows = 0
		case rows >= 0:
			rows++
		}
		if rows > n {
			break
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func mib(b int64) float64        { return float64(b) / (1 << 20) }

// machine describes this host for the README.
func machine() string {
	model, mem := "unknown CPU", ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	debian, _ := os.ReadFile("/etc/debian_version")
	return fmt.Sprintf("%s, %d vCPU%s, Linux %s, Debian %s", model, runtime.NumCPU(), mem,
		strings.TrimSpace(string(kernel)), strings.TrimSpace(string(debian)))
}

func gitRev(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "(unknown revision)"
	}
	return strings.TrimSpace(string(out))
}
