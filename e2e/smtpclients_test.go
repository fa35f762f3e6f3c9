package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smtplibScript submits one message (stdin) with Python's smtplib the way scripts and
// smtplib-based clients do: EHLO, STARTTLS or implicit TLS (or neither, for Postfix
// directly), AUTH with the mechanism and client response built here, then sendmail.
// XOAUTH2 answers an error challenge with an empty response, like Google's sample
// code. It prints one JSON object; an SMTP error is {"error": ..., "code": ...}.
const smtplibScript = `
import json, os, smtplib, ssl, sys
host, port, mode, mech, ir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
user, secret, rcpt = os.environ["SMTP_USER"], os.environ["SECRET"], os.environ["RCPT"]
msg = sys.stdin.buffer.read()
helo = "smtplib.e2e.test"  # without it smtplib resolves socket.getfqdn() first
ctx = ssl.create_default_context(cafile=os.environ.get("CAFILE"))
out = {}

class Responder:
    def __init__(self):
        self.calls = 0
    def __call__(self, challenge=None):
        self.calls += 1
        if self.calls > 1 and challenge:
            return ""  # answer to the error challenge
        if mech == "XOAUTH2":
            return "user=%s\x01auth=Bearer %s\x01\x01" % (user, secret)
        return "\0%s\0%s" % (user, secret)

try:
    if mode == "ssl":
        s = smtplib.SMTP_SSL(host, port, local_hostname=helo, context=ctx, timeout=15)
    else:
        s = smtplib.SMTP(host, port, local_hostname=helo, timeout=15)
        if mode == "starttls":
            s.starttls(context=ctx)
    s.ehlo(helo)
    out["ehlo_auth"] = s.esmtp_features.get("auth", "")
    out["auth"] = list(s.auth(mech, Responder(), initial_response_ok=ir))
    out["auth"][1] = out["auth"][1].decode()
    refused = s.sendmail(user, [rcpt], msg)
    out["refused"] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
    s.quit()
except smtplib.SMTPResponseException as err:
    out["error"], out["code"] = err.smtp_error.decode(errors="replace"), err.smtp_code
except smtplib.SMTPException as err:
    out["error"] = repr(err)
print(json.dumps(out))
`

type smtplibRun struct {
	addr            string
	mode            string // "ssl", "starttls" or "plain"
	mech            string // "XOAUTH2" or "PLAIN"
	initialResponse bool
	user, secret    string // secret: the token, or for PLAIN the password
	msg             string
}

type smtplibResult struct {
	EHLOAuth string            `json:"ehlo_auth"`
	Auth     [2]any            `json:"auth"`
	Refused  map[string][2]any `json:"refused"`
	Error    string            `json:"error"`
	Code     int               `json:"code"`
}

func (e *env) smtplib(t *testing.T, r smtplibRun) smtplibResult {
	t.Helper()
	host, port, _ := net.SplitHostPort(r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ir := "0"
	if r.initialResponse {
		ir = "1"
	}
	cmd := exec.CommandContext(ctx, "python3", "-c", smtplibScript, host, port, r.mode, r.mech, ir)
	cmd.Env = append(cmd.Environ(), "CAFILE="+e.certFile, "SMTP_USER="+r.user, "SECRET="+r.secret, "RCPT="+mailRcpt)
	cmd.Stdin = strings.NewReader(r.msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s%s", err, out, stderr.String())
	}
	var res smtplibResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("smtplib output %q: %v", out, err)
	}
	// JSON numbers decode as float64; make the code comparable with ints.
	if f, ok := res.Auth[0].(float64); ok {
		res.Auth[0] = int(f)
	}
	return res
}

// TestPythonSmtplibXOAUTH2: smtplib's auth() with XOAUTH2, with and without the
// initial response, over implicit TLS and STARTTLS; the message is then read back.
func TestPythonSmtplibXOAUTH2(t *testing.T) {
	e := e2eGateSMTP(t)
	tok := e.grantToken(t, "alice")
	for _, tc := range []struct {
		name, addr, mode string
		ir               bool
	}{
		{"smtps/initial-response", e.gate.smtps, "ssl", true},
		{"smtps/challenge", e.gate.smtps, "ssl", false},
		{"starttls/initial-response", e.gate.submission, "starttls", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgID, msg := testMessage("smtplib XOAUTH2 " + tc.name)
			r := e.smtplib(t, smtplibRun{addr: tc.addr, mode: tc.mode, mech: "XOAUTH2", initialResponse: tc.ir,
				user: mailFrom, secret: tok, msg: msg})
			if r.Error != "" || r.Auth[0] != 235 || len(r.Refused) != 0 {
				t.Fatalf("smtplib: %+v", r)
			}
			checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)
		})
	}
	t.Run("expired token", func(t *testing.T) {
		r := e.smtplib(t, smtplibRun{addr: e.gate.smtps, mode: "ssl", mech: "XOAUTH2", initialResponse: true,
			user: mailFrom, secret: e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}), msg: "unused"})
		if r.Code != 535 || !strings.HasPrefix(r.Error, "5.7.8") {
			t.Fatalf("smtplib with an expired token: %+v, want 535 5.7.8", r)
		}
	})
}

// TestCurlSMTP: curl --oauth2-bearer (OAUTHBEARER, since saslgate offers it) over
// smtps:// and smtp:// --ssl-reqd, with and without --sasl-ir.
func TestCurlSMTP(t *testing.T) {
	e := e2eGateSMTP(t)
	tok := e.grantToken(t, "alice")
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"smtps", []string{"smtps://" + e.gate.smtps}},
		{"smtps/sasl-ir", []string{"--sasl-ir", "smtps://" + e.gate.smtps}},
		{"smtp+ssl-reqd", []string{"--ssl-reqd", "smtp://" + e.gate.submission}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgID, msg := testMessage("curl " + tc.name)
			file := filepath.Join(t.TempDir(), "msg.eml")
			writeFile0600(t, file, msg)
			args := append([]string{"--mail-from", mailFrom, "--mail-rcpt", mailRcpt, "--upload-file", file}, tc.extra...)
			if _, err := runCmd(t, "", "curl", e.curlArgs(tok, args...)...); err != nil {
				t.Fatal(err)
			}
			checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)
		})
	}
	t.Run("expired token", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "msg.eml")
		writeFile0600(t, file, "Subject: never sent\r\n\r\nx\r\n")
		expired := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60})
		_, err := runCmd(t, "", "curl", e.curlArgs(expired, "--mail-from", mailFrom, "--mail-rcpt", mailRcpt,
			"--upload-file", file, "smtps://"+e.gate.smtps)...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 67 {
			t.Fatalf("curl: %v, want exit status 67 (CURLE_LOGIN_DENIED)", err)
		}
	})
}

// msmtprc writes an msmtp configuration with one account: TLS trusting the run's CA,
// implicit (tls_starttls off) or STARTTLS, the given auth method and a passwordeval
// that prints the token, as a token helper would. The token is in a file of its own:
// msmtp refuses configuration lines over 500 characters, so `passwordeval "echo
// <JWT>"` fails with exit status 78 (EX_CONFIG).
func (e *env) msmtprc(t *testing.T, addr string, starttls bool, auth, token string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile0600(t, tokenFile, token)
	onOff := map[bool]string{true: "on", false: "off"}
	rc := fmt.Sprintf(`# generated by saslgate e2e
defaults
logfile -
tls on
tls_trust_file %s
account e2e
host %s
port %s
tls_starttls %s
auth %s
user %s
passwordeval "cat %s"
from %s
domain msmtp.e2e.test
account default : e2e
`, e.certFile, host, port, onOff[starttls], auth, mailFrom, tokenFile, mailFrom)
	path := filepath.Join(dir, "msmtprc")
	writeFile0600(t, path, rc)
	return path
}

// TestMsmtp: msmtp with `auth oauthbearer` and `auth xoauth2` on both listeners.
// msmtp sends no initial response for XOAUTH2 and answers error challenges with an
// empty line (SPECS.md).
func TestMsmtp(t *testing.T) {
	e := e2eGateSMTP(t)
	tok := e.grantToken(t, "alice")
	for _, auth := range []string{"oauthbearer", "xoauth2"} {
		for _, starttls := range []bool{false, true} {
			addr, name := e.gate.smtps, auth+"/smtps"
			if starttls {
				addr, name = e.gate.submission, auth+"/starttls"
			}
			t.Run(name, func(t *testing.T) {
				msgID, msg := testMessage("msmtp " + name)
				rc := e.msmtprc(t, addr, starttls, auth, tok)
				if _, err := runCmd(t, msg, "msmtp", "-C", rc, "--debug", mailRcpt); err != nil {
					t.Fatal(err)
				}
				checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)
			})
		}
	}
	for _, auth := range []string{"oauthbearer", "xoauth2"} {
		t.Run(auth+"/expired token", func(t *testing.T) {
			rc := e.msmtprc(t, e.gate.smtps, false, auth, e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}))
			_, err := runCmd(t, "Subject: never sent\r\n\r\nx\r\n", "msmtp", "-C", rc, mailRcpt)
			var ee *exec.ExitError
			// msmtp exits with EX_NOPERM (77) when the server refuses the credentials.
			if !errors.As(err, &ee) || ee.ExitCode() != 77 {
				t.Fatalf("msmtp: %v, want exit status 77 (EX_NOPERM)", err)
			}
		})
	}
}
