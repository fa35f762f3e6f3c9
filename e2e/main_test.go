package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
)

// SASLGATE_E2E selects what happens when a component is missing:
//
//	unset    skip every test, saying which component is missing
//	require  fail the run (exit 1) — CI sets this, so e2e never passes by skipping
//	off      skip every test even if everything is installed
const envGate = "SASLGATE_E2E"

// env is the shared world of one run, built by TestMain.
type env struct {
	dir      string
	idp      *idp // the configured issuer
	otherIdP *idp // a second oidc-provider the proxy does not trust
	dovecot  *dovecot
	postfix  *postfix // nil when mail submission cannot run (smtpSkipReason says why)
	gate     *gate    // saslgate in front of dovecot (and postfix)
	deadGate *gate    // saslgate whose backend ports are closed
	deadIss  string
	certPool *x509.CertPool
	certFile string
	keyFile  string
	bin      string // the saslgate binary under test
	hmacKey  []byte
	procs    []stopper
	// smtpGateErr is set when saslgate refused a configuration with SMTP listeners;
	// it then runs with its IMAP listeners only, and every SMTP test through it fails
	// with this message.
	smtpGateErr string
}

// stopper is a running component TestMain stops at the end.
type stopper interface{ stop() }

var (
	world          *env
	skipReason     string
	smtpSkipReason string // why Postfix is not part of the world
)

// e2eSMTP returns the running world with Postfix, or skips the test with the reason
// TestMain found (never under SASLGATE_E2E=require, which fails the run instead).
func e2eSMTP(t *testing.T) *env {
	t.Helper()
	e := e2e(t)
	if e.postfix == nil {
		t.Skip(smtpSkipReason)
	}
	return e
}

// e2eGateSMTP is e2eSMTP for tests through saslgate's SMTP listeners: they fail, not
// skip, when the binary does not take SMTP listeners yet.
func e2eGateSMTP(t *testing.T) *env {
	t.Helper()
	e := e2eSMTP(t)
	if e.smtpGateErr != "" {
		t.Fatalf("saslgate did not start with its SMTP listeners (protocol: smtp, top-level smtp: section), so nothing serves SMTP:\n%s", e.smtpGateErr)
	}
	return e
}

// e2e returns the running world, or skips the test with the reason TestMain found.
func e2e(t *testing.T) *env {
	t.Helper()
	if world == nil {
		t.Skip(skipReason)
	}
	t.Cleanup(func() {
		if t.Failed() {
			world.dumpLogs(t)
		}
	})
	return world
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	mode := os.Getenv(envGate)
	switch mode {
	case "", "require":
	case "off":
		skipReason = envGate + "=off"
		return m.Run()
	default:
		fmt.Fprintf(os.Stderr, "e2e: %s=%q: want unset, \"require\" or \"off\"\n", envGate, mode)
		return 1
	}
	missing, missingSMTP := missingComponents(), missingSMTPComponents()
	if mode == "require" && len(missing)+len(missingSMTP) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: missing %s (%s=require)\n", strings.Join(append(missing, missingSMTP...), ", "), envGate)
		return 1
	}
	if len(missing) > 0 {
		skipReason = "e2e: missing " + strings.Join(missing, ", ") + "; install them (see e2e/README.md) or set " + envGate + "=require to make this an error"
		return m.Run()
	}
	if len(missingSMTP) > 0 {
		// IMAP still runs; only the tests that need Postfix are skipped.
		smtpSkipReason = "e2e: missing " + strings.Join(missingSMTP, ", ") + " for mail submission; install them (see e2e/README.md) or set " + envGate + "=require to make this an error"
	}

	dir, err := os.MkdirTemp("", "saslgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	e := &env{dir: dir}
	err = e.start()
	defer func() {
		e.stop()
		if os.Getenv("SASLGATE_E2E_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: kept", dir)
		}
	}()
	if err != nil {
		// Everything is installed, so a world that does not come up is a failure in
		// either mode, never a skip.
		fmt.Fprintln(os.Stderr, "e2e: setup failed:", err)
		e.dumpLogsTo(os.Stderr)
		return 1
	}
	world = e
	code := m.Run()
	gates := []*gate{e.gate, e.deadGate}
	e.stop() // flush the logs before reading them; the deferred stop is then a no-op
	for _, g := range gates {
		// SIGTERM is the documented way to stop saslgate; it should drain and exit 0.
		if g.proc.err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s did not exit cleanly on SIGTERM: %v\n", g.proc.name, g.proc.err)
		}
	}
	if e.checkLeaks() && code == 0 {
		code = 1
	}
	if e.checkRaces() && code == 0 {
		code = 1
	}
	return code
}

// checkLeaks reports tokens, SASL responses or backend secrets in saslgate's logs
// (DESIGN.md: tokens and secrets never appear in logs). Every JWT the tests sent
// starts with the base64url of `{"alg":`, every OAUTHBEARER response for alice with
// the base64 of "n,a=alice".
func (e *env) checkLeaks() bool {
	needles := map[string]string{
		"eyJhbGciOi":   "a JWT",
		"bixhPWFsaWNl": "a base64 OAUTHBEARER client response",
		backends.DeriveSecret(e.hmacKey, mailUser).Reveal():  "alice's backend secret",
		backends.DeriveSecret(e.hmacKey, mailUser2).Reveal(): "bob's backend secret",
	}
	found := false
	for _, log := range e.gateLogs() {
		b, err := os.ReadFile(log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			for needle, what := range needles {
				if strings.Contains(line, needle) {
					found = true
					fmt.Fprintf(os.Stderr, "e2e: %s logs %s: %.300s\n", filepath.Base(log), what, line)
				}
			}
		}
	}
	return found
}

// extraGateLogs are the logs of the saslgate instances single tests start.
var extraGateLogs struct {
	sync.Mutex
	paths []string
}

// gateLogs lists the log of every saslgate the run started.
func (e *env) gateLogs() []string {
	extraGateLogs.Lock()
	defer extraGateLogs.Unlock()
	logs := []string{e.gate.log, e.deadGate.log}
	return append(logs, extraGateLogs.paths...)
}

// checkRaces reports data races the -race saslgate binaries logged.
func (e *env) checkRaces() bool {
	found := false
	for _, log := range e.gateLogs() {
		b, err := os.ReadFile(log)
		if err != nil || !strings.Contains(string(b), "WARNING: DATA RACE") {
			continue
		}
		found = true
		fmt.Fprintf(os.Stderr, "e2e: %s reported a data race:\n%s\n", filepath.Base(log), b)
	}
	return found
}

// missingSMTPComponents lists what the mail-submission tests need but cannot find:
// Postfix, Dovecot's LMTP server, msmtp, and root (the postfix command is reserved for
// the superuser).
func missingSMTPComponents() []string {
	var missing []string
	if _, err := postfixCommand(); err != nil {
		missing = append(missing, "postfix (not in PATH or /usr/sbin)")
	}
	for _, bin := range []string{"msmtp", "mutt"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" (not in PATH)")
		}
	}
	if _, err := haproxyCommand(); err != nil {
		missing = append(missing, "haproxy (not in PATH or /usr/sbin)")
	}
	if out, err := exec.Command("doveconf", "-d", "-h", "libexec_dir").Output(); err != nil {
		missing = append(missing, "doveconf (not in PATH)")
	} else if _, err := os.Stat(filepath.Join(strings.TrimSpace(string(out)), "lmtp")); err != nil {
		missing = append(missing, "dovecot lmtp (dovecot-lmtpd)")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (Postfix's master runs as root)")
	}
	return missing
}

// missingComponents lists what the run needs but cannot find.
func missingComponents() []string {
	var missing []string
	for _, bin := range []string{"dovecot", "node", "curl", "python3", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" (not in PATH)")
		}
	}
	if _, err := os.Stat(filepath.Join(idpDir(), "node_modules", "oidc-provider", "package.json")); err != nil {
		missing = append(missing, "e2e/idp/node_modules (run: npm ci --prefix e2e/idp)")
	}
	if _, err := os.Stat(filepath.Join(moduleRoot(), "cmd", "saslgate")); err != nil {
		missing = append(missing, "cmd/saslgate (the binary's source)")
	}
	// What only some tests need, Dovecot's POP3 and ManageSieve servers and sieve-connect
	// (TestPOP3, TestSieve) and OpenLDAP (TestLDAPRouteSource), makes just those tests skip
	// when it is missing and the gate is unset; under require the run stops here, before
	// anything starts, rather than in the middle.
	if os.Getenv(envGate) == "require" {
		if out, err := exec.Command("doveconf", "-d", "-h", "libexec_dir").Output(); err != nil {
			missing = append(missing, "doveconf (not in PATH)")
		} else {
			for _, l := range []struct{ bin, pkg string }{{"pop3-login", "dovecot-pop3d"}, {"managesieve-login", "dovecot-managesieved"}} {
				if _, err := os.Stat(filepath.Join(strings.TrimSpace(string(out)), l.bin)); err != nil {
					missing = append(missing, "dovecot "+l.bin+" ("+l.pkg+")")
				}
			}
		}
		if _, err := exec.LookPath("sieve-connect"); err != nil {
			missing = append(missing, "sieve-connect (not in PATH)")
		}
		if bin, err := slapdCommand(); err != nil {
			missing = append(missing, "slapd (not in PATH or /usr/sbin)")
		} else if _, err := os.Stat(filepath.Join(filepath.Dir(bin), "slapadd")); err != nil {
			missing = append(missing, "slapadd (beside "+bin+")")
		}
	}
	return missing
}

func (e *env) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Build first: it is the slowest step and needs nothing else.
	bin, err := buildSaslgate(e.dir)
	if err != nil {
		return err
	}
	certFile, keyFile, pool, err := writeCert(e.dir)
	if err != nil {
		return err
	}
	e.certPool, e.certFile, e.keyFile, e.bin = pool, certFile, keyFile, bin

	keyFilePath := filepath.Join(e.dir, "hmac.key")
	if e.hmacKey, err = backends.NewHMACKeyFile(keyFilePath); err != nil {
		return err
	}

	if e.idp, err = startIdP(e.dir, "idp"); e.idp != nil {
		e.procs = append(e.procs, e.idp.proc)
	}
	if err != nil {
		return err
	}
	if e.otherIdP, err = startIdP(e.dir, "idp-untrusted"); e.otherIdP != nil {
		e.procs = append(e.procs, e.otherIdP.proc)
	}
	if err != nil {
		return err
	}
	submission := smtpSkipReason == ""
	o := dovecotOptions{key: e.hmacKey, submission: submission, master: &smtpMaster}
	if e.dovecot, err = startDovecotWith(ctx, e.dir, o); e.dovecot != nil && e.dovecot.proc != nil {
		e.procs = append(e.procs, e.dovecot.proc)
	}
	if err != nil {
		return err
	}
	if submission {
		p, err := startPostfix(ctx, e.dir, e.dovecot, e.hmacKey)
		if p != nil && p.proc != nil {
			e.procs = append(e.procs, p)
		}
		if err != nil {
			return err
		}
		e.postfix = p
	}

	// An issuer that is configured but not running: its tokens must give
	// NO [UNAVAILABLE], not an authentication failure.
	dead, err := freePort()
	if err != nil {
		return err
	}
	e.deadIss = "http://" + dead
	cfg := gateConfig{
		name:        "saslgate",
		backendAddr: e.dovecot.addr,
		issuers:     []string{e.idp.issuer, e.deadIss},
		certFile:    certFile,
		keyFile:     keyFile,
		hmacKeyFile: keyFilePath,
	}
	if e.postfix != nil {
		cfg.smtpBackendAddr = e.postfix.addr
	}
	if e.gate, err = startSaslgate(ctx, e.dir, bin, cfg); e.gate != nil && e.gate.proc != nil {
		e.procs = append(e.procs, e.gate.proc)
	}
	if err != nil && cfg.smtpBackendAddr != "" && e.gate != nil && e.gate.proc != nil && e.gate.proc.exited() {
		// The binary may not take SMTP listeners yet: keep the IMAP tests running and
		// let the SMTP tests fail with saslgate's own words.
		e.smtpGateErr = fmt.Sprintf("%v\n----- %s (tail) -----\n%s", err, filepath.Base(e.gate.log), tail(e.gate.log, 2<<10))
		cfg.smtpBackendAddr = ""
		if e.gate, err = startSaslgate(ctx, e.dir, bin, cfg); e.gate != nil && e.gate.proc != nil {
			e.procs = append(e.procs, e.gate.proc)
		}
	}
	if err != nil {
		return err
	}
	closedBackend, err := freePort()
	if err != nil {
		return err
	}
	cfg.name, cfg.backendAddr = "saslgate-deadbackend", closedBackend
	if cfg.smtpBackendAddr != "" {
		if cfg.smtpBackendAddr, err = freePort(); err != nil {
			return err
		}
	}
	if e.deadGate, err = startSaslgate(ctx, e.dir, bin, cfg); e.deadGate != nil && e.deadGate.proc != nil {
		e.procs = append(e.procs, e.deadGate.proc)
	}
	return err
}

func (e *env) stop() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop()
	}
	e.procs = nil
}

// dumpLogs logs the tail of every component's log into the failing test.
// A failing test gets the proxy's and Dovecot's logs; a failed setup gets all of them.
func (e *env) dumpLogs(t *testing.T) {
	var b strings.Builder
	e.dumpLogsTo(&b, "saslgate.log", "saslgate-deadbackend.log", "dovecot.log", "postfix.log")
	t.Log(b.String())
}

func (e *env) dumpLogsTo(w io.Writer, logs ...string) {
	if len(logs) == 0 {
		logs = []string{"saslgate.log", "saslgate-deadbackend.log", "dovecot.log", "dovecot.out", "postfix.log", "postfix.out", "idp.log", "idp-untrusted.log"}
	}
	for _, name := range logs {
		p := filepath.Join(e.dir, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		fmt.Fprintf(w, "----- %s (tail) -----\n%s\n", name, tail(p, 8<<10))
	}
}

func moduleRoot() string {
	wd, _ := os.Getwd() // go test runs in the package directory, e2e/
	return filepath.Dir(wd)
}

func idpDir() string { return filepath.Join(moduleRoot(), "e2e", "idp") }
