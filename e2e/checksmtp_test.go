package e2e

import (
	"fmt"
	"testing"
)

// TestCheckCommandSMTP: with an SMTP listener configured, `saslgate check` probes the
// submission backend (the real Postfix) and, with --user, logs in to it with the
// user's derived secret, as the proxy would.
func TestCheckCommandSMTP(t *testing.T) {
	e := e2eGateSMTP(t)
	conf := e.toolsConfig(t, toolsConfigSpec{
		name: "check-smtp",
		smtp: fmt.Sprintf("{address: %s, tls: none, login: plain, hostname: saslgate.e2e.test, timeout: 5s}", e.postfix.addr),
	})
	r := e.saslgateTool(t, "", "check", "--config", conf, "--user", mailUser)
	if r.code != 0 {
		t.Errorf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	wantLines(t, r.stdout,
		"OK   backend   imap backend "+e.dovecot.addr,
		"OK   backend   smtp backend "+e.postfix.addr,
		"OK   routes    2 pool(s), 0 route source(s)",
		"OK   route     imap "+mailUser+" → imap pool backend, member "+e.dovecot.addr,
		"OK   login     imap backend "+e.dovecot.addr+" accepts "+mailUser,
		"OK   route     smtp "+mailUser+" → smtp pool backend, member "+e.postfix.addr,
		"OK   login     smtp backend "+e.postfix.addr+" accepts "+mailUser,
		"all 12 checks passed",
	)
}
