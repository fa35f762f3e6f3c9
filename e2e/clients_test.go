package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// TestRealGrantToken checks the IdP side on its own: the authorization code + PKCE
// flow yields an RFC 9068 JWT access token for saslgate with alice's email.
func TestRealGrantToken(t *testing.T) {
	e := e2e(t)
	tok := e.grantToken(t, "alice")
	h, p, err := jwtParts(tok)
	if err != nil {
		t.Fatal(err)
	}
	if h["alg"] != "RS256" || h["typ"] != "at+jwt" || h["kid"] == nil {
		t.Errorf("header %v, want alg RS256, typ at+jwt, a kid", h)
	}
	want := map[string]any{"iss": e.idp.issuer, "aud": idpAudience, "email": mailUser, "sub": "alice", "client_id": idpClientID}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("claim %s = %v, want %v (all: %v)", k, p[k], v, p)
		}
	}
	if s, _ := p["scope"].(string); !strings.Contains(" "+s+" ", " email ") {
		t.Errorf("scope %q lacks email", s)
	}
}

// runCmd runs a client and returns stdout; stderr goes to the log on failure.
func runCmd(t *testing.T, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	if err != nil {
		t.Logf("%s failed: %v\nstderr:\n%s\nstdout:\n%s", name, err, redactTokens(stderr.String()), stdout.String())
	}
	return stdout.String(), err
}

// redactTokens keeps curl -v output readable: the base64 SASL responses are long.
func redactTokens(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 200 {
			l = l[:120] + "…[" + strconv.Itoa(len(l)) + " bytes]"
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// curlArgs are common to every curl run: trust the run's CA, authenticate with the
// bearer token (curl picks OAUTHBEARER when offered), verbose for failure logs.
func (e *env) curlArgs(token string, extra ...string) []string {
	return append([]string{"-v", "-sS", "--max-time", "20", "--cacert", e.certFile,
		"--user", mailUser + ":", "--oauth2-bearer", token}, extra...)
}

func TestCurlIMAPS(t *testing.T) {
	e := e2e(t)
	tok := e.grantToken(t, "alice")
	base := "imaps://" + e.gate.imaps

	for _, sasliR := range []bool{false, true} {
		var ir []string
		if sasliR {
			ir = []string{"--sasl-ir"}
		}
		t.Run("list/sasl-ir="+strconv.FormatBool(sasliR), func(t *testing.T) {
			out, err := runCmd(t, "", "curl", e.curlArgs(tok, append(ir, base+"/")...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !hasLine(out, func(l string) bool { return strings.HasPrefix(l, "* LIST (") && strings.HasSuffix(l, " INBOX") }) {
				t.Errorf("no `* LIST (...) INBOX` line in:\n%s", out)
			}
		})
	}
	t.Run("examine", func(t *testing.T) {
		out, err := runCmd(t, "", "curl", e.curlArgs(tok, base+"/INBOX", "-X", "EXAMINE INBOX")...)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"* 1 EXISTS", "* OK [UIDVALIDITY "} {
			if !hasLine(out, func(l string) bool { return strings.HasPrefix(l, want) }) {
				t.Errorf("no %q line in:\n%s", want, out)
			}
		}
	})
	t.Run("fetch", func(t *testing.T) {
		out, err := runCmd(t, "", "curl", e.curlArgs(tok, base+"/INBOX;UID=1")...)
		if err != nil {
			t.Fatal(err)
		}
		if out != seededBody {
			t.Errorf("body:\n%q\nwant:\n%q", out, seededBody)
		}
	})
}

func TestCurlSTARTTLS(t *testing.T) {
	e := e2e(t)
	tok := e.grantToken(t, "alice")
	out, err := runCmd(t, "", "curl", e.curlArgs(tok, "--ssl-reqd", "imap://"+e.gate.starttls+"/INBOX;UID=1")...)
	if err != nil {
		t.Fatal(err)
	}
	if out != seededBody {
		t.Errorf("body:\n%q\nwant:\n%q", out, seededBody)
	}
}

// TestCurlBadToken: curl must get a clean failure (curl exit 67, "login denied").
func TestCurlBadToken(t *testing.T) {
	e := e2e(t)
	tok := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60})
	_, err := runCmd(t, "", "curl", e.curlArgs(tok, "imaps://"+e.gate.imaps+"/INBOX;UID=1")...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 67 {
		t.Fatalf("curl: %v, want exit status 67 (CURLE_LOGIN_DENIED)", err)
	}
}

func hasLine(out string, pred func(string) bool) bool {
	for _, l := range strings.Split(out, "\n") {
		if pred(strings.TrimRight(l, "\r")) {
			return true
		}
	}
	return false
}

// imaplibScript logs in with XOAUTH2 the way imaplib-based clients do (no SASL-IR;
// the token comes from the environment), then LIST, EXAMINE and FETCH 1, and prints
// one JSON object. An IMAP error is printed as {"error": "..."}.
const imaplibScript = `
import imaplib, json, os, ssl, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=os.environ["CAFILE"])
out = {}
try:
    if mode == "ssl":
        M = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=15)
    else:
        M = imaplib.IMAP4(host, port, timeout=15)
        M.starttls(ssl_context=ctx)
    auth = "user=%s\x01auth=Bearer %s\x01\x01" % (os.environ["IMAP_USER"], os.environ["TOKEN"])
    typ, data = M.authenticate("XOAUTH2", lambda challenge: auth)
    out["auth"] = typ
    typ, data = M.list()
    out["list"] = [typ] + [d.decode() for d in data]
    typ, data = M.select("INBOX", readonly=True)
    out["select"] = [typ, data[0].decode()]
    typ, data = M.fetch("1", "(BODY.PEEK[])")
    out["fetch"] = typ
    out["body"] = data[0][1].decode()
    M.logout()
except imaplib.IMAP4.error as err:
    out["error"] = str(err)
print(json.dumps(out))
`

type imaplibResult struct {
	Auth   string   `json:"auth"`
	List   []string `json:"list"`
	Select []string `json:"select"`
	Fetch  string   `json:"fetch"`
	Body   string   `json:"body"`
	Error  string   `json:"error"`
}

func (e *env) imaplib(t *testing.T, addr, mode, token string) imaplibResult {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-c", imaplibScript, host, port, mode)
	cmd.Env = append(cmd.Environ(), "CAFILE="+e.certFile, "IMAP_USER="+mailUser, "TOKEN="+token)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 imaplib: %v\n%s%s", err, out, stderr.String())
	}
	var r imaplibResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("imaplib output %q: %v", out, err)
	}
	return r
}

func TestPythonImaplibXOAUTH2(t *testing.T) {
	e := e2e(t)
	tok := e.grantToken(t, "alice")
	for _, tc := range []struct{ name, addr, mode string }{
		{"imaps", e.gate.imaps, "ssl"},
		{"starttls", e.gate.starttls, "starttls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.imaplib(t, tc.addr, tc.mode, tok)
			if r.Error != "" || r.Auth != "OK" {
				t.Fatalf("imaplib: %+v", r)
			}
			if len(r.List) < 2 || r.List[0] != "OK" || !strings.HasSuffix(r.List[1], " INBOX") {
				t.Errorf("LIST = %q", r.List)
			}
			if len(r.Select) != 2 || r.Select[0] != "OK" || r.Select[1] != "1" {
				t.Errorf("EXAMINE INBOX = %q, want [OK 1]", r.Select)
			}
			if r.Fetch != "OK" || r.Body != seededBody {
				t.Errorf("FETCH = %s, body %q, want %q", r.Fetch, r.Body, seededBody)
			}
		})
	}
}

// TestPythonImaplibBadToken: imaplib answers the error challenge with its whole
// initial response again (SPECS.md); the proxy must end the exchange with NO.
func TestPythonImaplibBadToken(t *testing.T) {
	e := e2e(t)
	tok := e.mint(t, e.idp, mintRequest{Aud: "someone-else"})
	r := e.imaplib(t, e.gate.imaps, "ssl", tok)
	if !strings.Contains(r.Error, "AUTHENTICATIONFAILED") {
		t.Fatalf("imaplib result %+v, want an error with [AUTHENTICATIONFAILED]", r)
	}
}

func TestGoIMAPClientOAuthBearer(t *testing.T) {
	e := e2e(t)
	tok := e.grantToken(t, "alice")
	dial := map[string]func() (*imapclient.Client, error){
		"imaps": func() (*imapclient.Client, error) {
			return imapclient.DialTLS(e.gate.imaps, &imapclient.Options{TLSConfig: e.tlsConfig()})
		},
		"starttls": func() (*imapclient.Client, error) {
			return imapclient.DialStartTLS(e.gate.starttls, &imapclient.Options{TLSConfig: e.tlsConfig()})
		},
	}
	for _, name := range []string{"imaps", "starttls"} {
		t.Run(name, func(t *testing.T) {
			c, err := dial[name]()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !c.Caps().Has(imap.AuthCap("OAUTHBEARER")) {
				t.Errorf("capabilities %v lack AUTH=OAUTHBEARER", c.Caps())
			}
			// go-sasl sends host and port; on the implicit-TLS listener they must match its
			// configured public_host/public_port.
			host, portStr, _ := net.SplitHostPort(e.gate.imaps)
			if name == "starttls" {
				host, portStr, _ = net.SplitHostPort(e.gate.starttls)
			}
			port, _ := strconv.Atoi(portStr)
			err = c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
				Username: mailUser, Token: tok, Host: host, Port: port,
			}))
			if err != nil {
				t.Fatalf("AUTHENTICATE OAUTHBEARER: %v", err)
			}
			if c.Caps().Has(imap.AuthCap("OAUTHBEARER")) || c.Caps().Has(imap.CapStartTLS) {
				t.Errorf("post-auth capabilities %v still show pre-auth AUTH=/STARTTLS", c.Caps())
			}
			sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
			if err != nil {
				t.Fatalf("EXAMINE INBOX: %v", err)
			}
			if sel.NumMessages != 1 {
				t.Errorf("INBOX has %d messages, want 1", sel.NumMessages)
			}
			section := &imap.FetchItemBodySection{Peek: true}
			msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
			if err != nil {
				t.Fatalf("FETCH 1: %v", err)
			}
			if len(msgs) != 1 || string(msgs[0].FindBodySection(section)) != seededBody {
				t.Errorf("FETCH 1 BODY.PEEK[] = %v, want the seeded message", msgs)
			}
			if err := c.Logout().Wait(); err != nil {
				t.Errorf("LOGOUT: %v", err)
			}
		})
	}
}
