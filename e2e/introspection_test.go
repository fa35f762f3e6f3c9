package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
)

// TestOpaqueRevocation: a token revoked at the IdP keeps working through a saslgate
// that cached it (cache.ttl 1h here), stops at once through one with the cache off, and
// stops through one with a 1 s TTL once its entry expires, and not before. All three
// trust the run's JWT IdP as well. Nothing here depends on how fast the run is: the
// expiry is polled for, and a refusal is only checked to come after the TTL.
func TestOpaqueRevocation(t *testing.T) {
	e := e2e(t)
	const shortTTL = time.Second
	o := e.startTestIdP(t, "idp-revocation")
	issuers := []string{jwtIssuer(e.idp.issuer), e.introspectionIssuer(t, o.issuer)}
	cached := e.startTestGate(t, gateSpec{name: "saslgate-ttl-long", issuers: issuers, cache: "{ttl: 1h}"})
	expiring := e.startTestGate(t, gateSpec{name: "saslgate-ttl-short", issuers: issuers, cache: "{ttl: 1s}"})
	uncached := e.startTestGate(t, gateSpec{name: "saslgate-nocache", issuers: issuers, cache: "{disabled: true}"})
	tok := o.mintOpaque(t, "alice")

	e.loginOK(t, uncached, tok)
	e.loginOK(t, cached, tok)
	storedAfter := time.Now() // the short-TTL entry is stored after this instant
	e.loginOK(t, expiring, tok)

	o.revoke(t, tok)
	t.Run("cached: still logs in", func(t *testing.T) {
		e.loginOK(t, cached, tok)
	})
	t.Run("cache off: refused at once", func(t *testing.T) {
		e.loginRefused(t, uncached, tok)
	})
	t.Run("short TTL: refused once the entry expired, not before", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for !e.loginWasRefused(t, expiring, tok) {
			if time.Now().After(deadline) {
				t.Fatalf("the revoked token still logs in 30 s after it was cached with a %v TTL", shortTTL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if d := time.Since(storedAfter); d < shortTTL {
			t.Errorf("refused %v after it was cached: the %v cache entry ended early", d, shortTTL)
		}
	})
	// uncached: 2 introspections; long TTL: 1 (the second login was not asked about);
	// short TTL: 1 before the revocation and 1 for the refusal (polls inside the TTL are
	// cache hits).
	if c := o.counts(t); c.Introspection != 5 || c.Revocation != 1 {
		t.Errorf("IdP counts %+v, want 5 introspections and 1 revocation", c)
	}
}

// loginWasRefused tries one OAUTHBEARER login and reports whether it was refused with the
// invalid_token dance; a success logs out, anything else fails the test.
func (e *env) loginWasRefused(t *testing.T, g *gate, token string) bool {
	t.Helper()
	w := dialWire(t, g.imaps, e.tlsConfig())
	w.greeting()
	w.send("r AUTHENTICATE OAUTHBEARER " + oauthBearerIR(mailUser, "", 0, token))
	line := w.expect("")
	switch {
	case strings.HasPrefix(line, "r OK"):
		w.send("z LOGOUT")
		w.expectTagged("z", "OK")
		return false
	case strings.HasPrefix(line, "+ "):
		w.send("AQ==")
		w.expectTagged("r", "NO [AUTHENTICATIONFAILED]")
		return true
	}
	t.Fatalf("AUTHENTICATE answered %q; want r OK or an error challenge", line)
	return false
}

// TestIntrospectionIdPStopped: the introspection IdP goes away mid-test. A token
// saslgate has cached still logs in; one it has not seen gets NO [UNAVAILABLE] (the
// client may retry), never AUTHENTICATIONFAILED; the JWT issuer is unaffected; once
// the IdP is back on its port, logins work again.
func TestIntrospectionIdPStopped(t *testing.T) {
	e := e2e(t)
	o := e.startTestIdP(t, "idp-stopped")
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-idp-stopped",
		issuers: []string{jwtIssuer(e.idp.issuer), e.introspectionIssuer(t, o.issuer)},
	})
	seen, unseen := o.mintOpaque(t, "alice"), o.mintOpaque(t, "alice")
	e.loginOK(t, g, seen)

	o.stop()
	t.Run("IdP down/cached token", func(t *testing.T) { e.loginOK(t, g, seen) })
	t.Run("IdP down/new token", func(t *testing.T) { e.loginUnavailable(t, g, unseen) })
	t.Run("IdP down/JWT of the other issuer", func(t *testing.T) { e.loginOK(t, g, e.mint(t, e.idp, mintRequest{})) })

	o.restart(false)
	t.Run("IdP back/new token", func(t *testing.T) { e.loginOK(t, g, o.mintOpaque(t, "alice")) })
	t.Run("IdP back/cached token", func(t *testing.T) { e.loginOK(t, g, seen) })
}

// TestConcurrentOpaqueLogins: 200 clients authenticate at the same moment with one
// opaque token saslgate has not seen: the IdP gets exactly one introspection
// request (concurrent validations of a token share one check, later ones hit the
// cache), and all 200 log in to Dovecot. The clients connect 16 at a time (200 TLS
// handshakes at once under -race on a small machine outlast any sane timeout), then
// wait for each other and send AUTHENTICATE together.
func TestConcurrentOpaqueLogins(t *testing.T) {
	const clients = 200
	e := e2e(t)
	o := e.startTestIdP(t, "idp-concurrent")
	d := e.startRoomyDovecot(t, "dovecot-concurrent")
	g := e.startTestGate(t, gateSpec{
		name:    "saslgate-concurrent",
		backend: d.addr,
		issuers: []string{e.introspectionIssuer(t, o.issuer)},
	})
	tok := o.mintOpaque(t, "alice")
	ir := oauthBearerIR(mailUser, "", 0, tok)
	o.resetCounts(t)

	var greeted, done sync.WaitGroup
	start := make(chan struct{})
	dialing := make(chan struct{}, 16)
	transcripts := make([][]string, clients)
	errs := make([]error, clients)
	for i := range clients {
		greeted.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			transcripts[i], errs[i] = rawOpaqueLogin(g.imaps, e.tlsConfig(), ir, dialing, greeted.Done, start)
		}()
	}
	greeted.Wait() // every client has its greeting (or has failed): now all at once
	close(start)
	done.Wait()

	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		if failed++; failed <= 3 {
			t.Errorf("client %d: %v\n%s", i, err, strings.Join(transcripts[i], "\n"))
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d logins failed", failed, clients)
	}
	if c := o.counts(t); c.Introspection != 1 {
		t.Errorf("%d logins with one token caused %d introspection requests, want 1", clients, c.Introspection)
	}
}

// rawOpaqueLogin is one client of TestConcurrentOpaqueLogins: TLS and the greeting
// while holding a dialing slot, then (after greeted, once start is closed)
// AUTHENTICATE with SASL-IR and LOGOUT. It returns the C:/S: transcript; every step
// has a deadline.
func rawOpaqueLogin(addr string, conf *tls.Config, ir string, dialing chan struct{}, greeted func(), start <-chan struct{}) (transcript []string, err error) {
	once := sync.OnceFunc(greeted)
	defer once()
	dialing <- struct{}{}
	release := sync.OnceFunc(func() { <-dialing })
	defer release()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 15 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	read := func() (string, error) {
		l, err := r.ReadString('\n')
		l = strings.TrimRight(l, "\r\n")
		transcript = append(transcript, "S: "+l)
		return l, err
	}
	// untilTagged reads to the tagged reply and fails unless it is want.
	untilTagged := func(tag, want string) error {
		for {
			l, err := read()
			if err != nil {
				return err
			}
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" "+want) {
					return fmt.Errorf("got %q, want %s %s", l, tag, want)
				}
				return nil
			}
			if strings.HasPrefix(l, "+ ") {
				return fmt.Errorf("got the error challenge %q", l)
			}
		}
	}
	send := func(line, shown string) error {
		transcript = append(transcript, "C: "+shown)
		_, err := c.Write([]byte(line + "\r\n"))
		return err
	}

	if l, err := read(); err != nil || !strings.HasPrefix(l, "* OK") {
		return transcript, errors.Join(errors.New("no greeting"), err)
	}
	release()
	once()
	<-start
	if err := send("a AUTHENTICATE OAUTHBEARER "+ir, "a AUTHENTICATE OAUTHBEARER <ir>"); err != nil {
		return transcript, err
	}
	if err := untilTagged("a", "OK"); err != nil {
		return transcript, err
	}
	if err := send("b LOGOUT", "b LOGOUT"); err != nil {
		return transcript, err
	}
	return transcript, untilTagged("b", "OK")
}

// startRoomyDovecot starts a Dovecot of its own for name, like the run's, whose
// limits take 200 simultaneous sessions of one user from one address: the defaults
// are mail_max_userip_connections = 10 and 100 imap-login processes (one per
// connection). The overrides are appended to the generated config and read on SIGHUP.
func (e *env) startRoomyDovecot(t *testing.T, name string) *dovecot {
	t.Helper()
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := startDovecot(ctx, dir, e.hmacKey, false)
	if d != nil && d.proc != nil {
		t.Cleanup(func() {
			d.proc.stop()
			if t.Failed() {
				t.Logf("----- %s/dovecot.log (tail) -----\n%s", name, tail(d.log, 8<<10))
			}
		})
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	f, err := os.OpenFile(d.conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(`
# startRoomyDovecot
mail_max_userip_connections = 1000
service imap-login {
  service_count = 0
}
`)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(d.proc.cmd.Process.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(d.log)
		if strings.Contains(string(b), "SIGHUP received") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reload its configuration:\n%s", name, tail(d.log, 4<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	secret := backends.DeriveSecret(e.hmacKey, mailUser).Reveal()
	for {
		err := d.checkLogin(mailUser, secret)
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no login after the reload: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
