package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/tls/certs"
)

// `saslgate check` and `saslgate token verify` run in process against what they would reach in
// production: an issuer (internal/demoissuer), an IMAP backend (adminEnv's imapmemserver)
// and an SMTP submission backend (demosmtp.go's), both taking alice's HMAC-derived secret.

// mailEnv is one such set-up and the configuration file that points at it.
type mailEnv struct {
	issuer             *demoissuer.Issuer
	cert               *x509.Certificate // the gateway's, in Dir as cert.pem and key.pem
	imapAddr, smtpAddr string            // the backends alice has an account on

	// The fields of the configuration file; tests change them to break one thing.
	Dir     string // cert.pem, key.pem
	Issuer  string // one entry of tokens.issuers, a YAML flow mapping
	IMAP    string // imap.backend
	SMTP    string // smtp.backend
	KeyFile string // secrets.hmac_key_file
	Extra   string // more top-level sections
}

func newMailEnv(t *testing.T) *mailEnv {
	t.Helper()
	cfg, iss := adminEnv(t)
	key, err := backends.ReadHMACKeyFile(cfg.Secrets.HMACKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	smtpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	smtpBackend := gosmtp.NewServer(&demoSubmission{key: key, mailboxes: map[string]*imapmemserver.User{
		"alice": imapmemserver.NewUser("alice", backends.DeriveSecret(key, "alice").Reveal()),
	}})
	smtpBackend.Domain = "backend.test"
	smtpBackend.AllowInsecureAuth = true
	go smtpBackend.Serve(smtpLn)
	t.Cleanup(func() { smtpBackend.Close() })

	dir := t.TempDir()
	cert, err := x509.ParseCertificate(writeCert(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	e := &mailEnv{
		issuer:   iss,
		cert:     cert,
		imapAddr: imapBackend(cfg).Address,
		smtpAddr: smtpLn.Addr().String(),
		Dir:      dir,
		Issuer:   fmt.Sprintf("{issuer: %q, audience: [saslgate], username_claim: sub}", iss.URL()),
		KeyFile:  cfg.Secrets.HMACKeyFile,
	}
	e.IMAP = fmt.Sprintf("{address: %q, tls: none}", e.imapAddr)
	e.SMTP = fmt.Sprintf("{address: %q, tls: none, hostname: gw.test}", e.smtpAddr)
	return e
}

var mailConfig = template.Must(template.New("config").Parse(`
tls: {cert_file: {{.Dir}}/cert.pem, key_file: {{.Dir}}/key.pem}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:0", tls: implicit, public_host: mail.example.com, public_port: 993}
  - {name: imap, protocol: imap, address: "127.0.0.1:0", tls: starttls, public_host: mail.example.com, public_port: 143}
  - {name: submissions, protocol: smtp, address: "127.0.0.1:0", tls: implicit, public_host: mail.example.com, public_port: 465}
imap:
  backend: {{.IMAP}}
smtp:
  backend: {{.SMTP}}
secrets: {source: hmac, hmac_key_file: {{.KeyFile}}}
tokens:
  issuers:
    - {{.Issuer}}
{{.Extra}}
`))

// config writes the configuration file as the fields say now.
func (e *mailEnv) config(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	if err := mailConfig.Execute(&b, e); err != nil {
		t.Fatal(err)
	}
	return writeConfig(t, b.String())
}

// deadAddr is a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tlsIMAPBackend is an IMAP backend with implicit TLS and a self-signed certificate for
// 127.0.0.1, whose PEM file it returns.
func tlsIMAPBackend(t *testing.T) (addr, caFile string) {
	t.Helper()
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "backend-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	mem := imapmemserver.New()
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:   imap.CapSet{imap.CapIMAP4rev1: {}},
		Logger: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), caFile
}

// oauthBearerIMAP is an IMAP backend offering AUTH=OAUTHBEARER, enough for the probe: it
// greets with its capabilities and answers every command OK, LOGOUT with BYE.
func oauthBearerIMAP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	const caps = "IMAP4rev1 SASL-IR AUTH=OAUTHBEARER"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "* OK [CAPABILITY %s] ready\r\n", caps)
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
					switch strings.ToUpper(cmd) {
					case "CAPABILITY":
						fmt.Fprintf(c, "* CAPABILITY %s\r\n%s OK done\r\n", caps, tag)
					case "LOGOUT":
						fmt.Fprintf(c, "* BYE bye\r\n%s OK done\r\n", tag)
						return
					default:
						fmt.Fprintf(c, "%s OK done\r\n", tag)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// writeExpiredCert writes to dir a certificate for 127.0.0.1 that expired on notAfter, and
// its key.
func writeExpiredCert(t *testing.T, dir string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mail.example.com"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    notAfter.AddDate(0, -3, 0),
		NotAfter:     notAfter,
	}, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mail.example.com"}}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{"cert.pem": {Type: "CERTIFICATE", Bytes: der}, "key.pem": {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// okLines are the report lines of a check against e with nothing broken, by check.
func (e *mailEnv) okLines(path string) map[string]string {
	iss := e.issuer.URL()
	return map[string]string{
		"config":     "OK   config    " + path,
		"tls":        "OK   tls       certificate for 127.0.0.1, valid until " + e.cert.NotAfter.UTC().Format("2006-01-02"),
		"issuer":     "OK   issuer    " + iss + ": metadata at " + iss + "/.well-known/openid-configuration",
		"keys":       "OK   keys      " + iss + ": 1 signing key(s) at " + iss + "/jwks: RS256 kid=" + e.issuer.KeyID(),
		"secrets":    "OK   secrets   source hmac",
		"imap":       "OK   backend   imap backend " + e.imapAddr + " (tls none): no TLS; offers login plain",
		"imap login": "OK   login     imap backend " + e.imapAddr + " accepts alice with the derived secret",
		"smtp":       "OK   backend   smtp backend " + e.smtpAddr + " (tls none): no TLS; offers login plain",
		"smtp login": "OK   login     smtp backend " + e.smtpAddr + " accepts alice with the derived secret",
		"routes":     "OK   routes    2 pool(s), 0 route source(s)",
		"imap route": "OK   route     imap alice → imap pool backend, member " + e.imapAddr + " (route from default); the user's secret from the secrets section",
		"smtp route": "OK   route     smtp alice → smtp pool backend, member " + e.smtpAddr + " (route from default); the user's secret from the secrets section",
	}
}

// lines joins report lines as the command prints them.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// An admin's first run: every check passes, one line each, exit 0.
func TestCheckAllOK(t *testing.T) {
	e := newMailEnv(t)
	e.Extra = `http: {address: "127.0.0.1:8080", domains: [example.com]}`
	path := e.config(t)
	ok := e.okLines(path)
	http := "OK   http      127.0.0.1:8080 announces imap mail.example.com:993 (implicit), imap mail.example.com:143 (starttls), smtp mail.example.com:465 (implicit)"

	code, out, errs := runCmd(t, "", "check", "--config", path, "--user", "alice")
	want := lines(ok["config"], ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
		ok["imap"], ok["smtp"], ok["routes"], ok["imap route"], ok["imap login"], ok["smtp route"], ok["smtp login"], http,
		"all 13 checks passed")
	if code != 0 || out != want || errs != "" {
		t.Errorf("check --user alice: exit %d, stderr %q\n got:\n%s\nwant:\n%s", code, errs, out, want)
	}

	// Without --user nothing logs in.
	code, out, errs = runCmd(t, "", "check", "--config", path)
	want = lines(ok["config"], ok["tls"], ok["issuer"], ok["keys"], ok["secrets"], ok["imap"], ok["smtp"], http,
		"all 8 checks passed")
	if code != 0 || out != want || errs != "" {
		t.Errorf("check: exit %d, stderr %q\n got:\n%s\nwant:\n%s", code, errs, out, want)
	}
}

// Each thing that can be wrong is a FAIL line saying what and why; the other checks still
// run, and the exit code is 1 with the count on standard error.
func TestCheckFailures(t *testing.T) {
	base := newMailEnv(t)
	deadIssuer := "http://" + deadAddr(t)
	deadIMAP := deadAddr(t)
	tlsBackend, tlsCA := tlsIMAPBackend(t)
	otherKey := filepath.Join(t.TempDir(), "rotated.key")
	if _, err := backends.NewHMACKeyFile(otherKey); err != nil {
		t.Fatal(err)
	}
	expiredDir := t.TempDir()
	writeExpiredCert(t, expiredDir, time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC))
	// A renewed certificate next to the old key.
	mismatchedDir := t.TempDir()
	writeCert(t, mismatchedDir)
	key, err := os.ReadFile(filepath.Join(mismatchedDir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	writeCert(t, mismatchedDir)
	if err := os.WriteFile(filepath.Join(mismatchedDir, "key.pem"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	masterFile := filepath.Join(t.TempDir(), "master.secret")
	if err := os.WriteFile(masterFile, []byte("m4ster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenIMAP := oauthBearerIMAP(t)
	iss := base.issuer.URL()
	// An issuer with a certificate from a private CA.
	hs := httptest.NewUnstartedServer(nil)
	tlsIss := "https://" + hs.Listener.Addr().String()
	privateIdP, err := demoissuer.New(tlsIss, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = privateIdP.Handler()
	hs.StartTLS()
	defer hs.Close()
	idpCA := filepath.Join(t.TempDir(), "idp-ca.pem")
	if err := os.WriteFile(idpCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		edit func(e *mailEnv)
		user string
		// want are the lines after the config line; ok[check] is that check's OK line.
		want func(ok map[string]string) []string
	}{
		{
			name: "issuer down",
			edit: func(e *mailEnv) { e.Issuer = fmt.Sprintf("{issuer: %q, audience: [saslgate]}", deadIssuer) },
			want: func(ok map[string]string) []string {
				return []string{ok["tls"],
					`FAIL issuer    idpmeta: Get "` + deadIssuer + `/.well-known/openid-configuration": dial tcp ` + strings.TrimPrefix(deadIssuer, "http://") + ": connect: connection refused",
					ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "issuer certificate from a CA not configured",
			edit: func(e *mailEnv) { e.Issuer = fmt.Sprintf("{issuer: %q, audience: [saslgate]}", tlsIss) },
			want: func(ok map[string]string) []string {
				return []string{ok["tls"],
					`FAIL issuer    idpmeta: Get "` + tlsIss + `/.well-known/openid-configuration": tls: failed to verify certificate: x509: certificate signed by unknown authority`,
					ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "issuer certificate trusted by ca_file",
			edit: func(e *mailEnv) {
				e.Issuer = fmt.Sprintf("{issuer: %q, audience: [saslgate], ca_file: %q}", tlsIss, idpCA)
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"],
					"OK   issuer    " + tlsIss + ": metadata at " + tlsIss + "/.well-known/openid-configuration",
					"OK   keys      " + tlsIss + ": 1 signing key(s) at " + tlsIss + "/jwks: RS256 kid=" + privateIdP.KeyID(),
					ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "issuer ca_file naming a key, not a certificate",
			edit: func(e *mailEnv) {
				e.Issuer = fmt.Sprintf("{issuer: %q, audience: [saslgate], ca_file: %q}", tlsIss, e.Dir+"/key.pem")
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"],
					"FAIL issuer    " + tlsIss + ": ca_file " + base.Dir + "/key.pem: no PEM certificates found",
					ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "imap backend down",
			edit: func(e *mailEnv) { e.IMAP = fmt.Sprintf("{address: %q, tls: none}", deadIMAP) },
			user: "alice",
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"FAIL backend   imap backend " + deadIMAP + ": probe: dial tcp " + deadIMAP + ": connect: connection refused",
					ok["smtp"], ok["routes"],
					"OK   route     imap alice → imap pool backend, member " + deadIMAP + " (route from default); the user's secret from the secrets section",
					"SKIP login     imap backend " + deadIMAP + ": not tried, it failed its check above",
					ok["smtp route"], ok["smtp login"]}
			},
		},
		{
			name: "backends provisioned with another key",
			edit: func(e *mailEnv) { e.KeyFile = otherKey },
			user: "alice",
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					ok["imap"], ok["smtp"], ok["routes"],
					ok["imap route"], `FAIL login     backends: imap backend ` + base.imapAddr + ` rejected login for "alice": NO [AUTHENTICATIONFAILED] Authentication failed`,
					ok["smtp route"], `FAIL login     backends: smtp backend ` + base.smtpAddr + ` rejected login for "alice": backend replied 535 5.7.8 Authentication credentials invalid`}
			},
		},
		{
			name: "backend certificate not trusted",
			edit: func(e *mailEnv) { e.IMAP = fmt.Sprintf("{address: %q, tls: implicit}", tlsBackend) },
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"FAIL backend   imap backend " + tlsBackend + ": probe: TLS handshake with 127.0.0.1: tls: failed to verify certificate: x509: certificate signed by unknown authority",
					ok["smtp"]}
			},
		},
		{
			name: "backend certificate trusted by ca_file",
			edit: func(e *mailEnv) { e.IMAP = fmt.Sprintf("{address: %q, tls: implicit, ca_file: %q}", tlsBackend, tlsCA) },
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"OK   backend   imap backend " + tlsBackend + " (tls implicit): TLS 1.3, certificate verified for 127.0.0.1; offers login plain",
					ok["smtp"]}
			},
		},
		{
			name: "backend certificate not verified",
			edit: func(e *mailEnv) {
				e.IMAP = fmt.Sprintf("{address: %q, tls: implicit, insecure_skip_verify: true}", tlsBackend)
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"OK   backend   imap backend " + tlsBackend + " (tls implicit): TLS 1.3, certificate NOT verified (insecure_skip_verify); offers login plain",
					ok["smtp"]}
			},
		},
		{
			name: "ca_file naming a key, not a certificate",
			edit: func(e *mailEnv) {
				e.IMAP = fmt.Sprintf("{address: %q, tls: implicit, ca_file: %q}", tlsBackend, e.Dir+"/key.pem")
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"FAIL backend   imap backend " + tlsBackend + ": ca_file " + base.Dir + "/key.pem: no PEM certificates found",
					ok["smtp"]}
			},
		},
		{
			name: "smtp backend without XCLIENT",
			edit: func(e *mailEnv) {
				e.SMTP = fmt.Sprintf("{address: %q, tls: none, login: xclient}", base.smtpAddr)
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"], ok["imap"],
					"FAIL backend   smtp backend " + base.smtpAddr + " does not offer XCLIENT LOGIN (is saslgate in smtpd_authorized_xclient_hosts?), needed for login: xclient"}
			},
		},
		{
			name: "secrets unreadable: no login is tried",
			edit: func(e *mailEnv) { e.KeyFile = base.Dir + "/no-hmac.key" },
			user: "alice",
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"],
					"FAIL secrets   backends: hmac key file: open " + base.Dir + "/no-hmac.key: no such file or directory",
					ok["imap"], ok["smtp"], ok["routes"], ok["imap route"], ok["smtp route"]}
			},
		},
		{
			name: "master logins: secret file missing, and read",
			edit: func(e *mailEnv) {
				e.IMAP = fmt.Sprintf("{address: %q, tls: none, login: master, master_user: admin, master_secret_file: %q}", base.imapAddr, base.Dir+"/no-master.secret")
				e.SMTP = fmt.Sprintf("{address: %q, tls: none, hostname: gw.test, login: master_separator, master_user: admin, master_secret_file: %q}", base.smtpAddr, masterFile)
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"FAIL master    imap backend " + base.imapAddr + ": backends: master_secret_file: open " + base.Dir + "/no-master.secret: no such file or directory",
					"OK   backend   imap backend " + base.imapAddr + " (tls none): no TLS; offers login master",
					"OK   master    smtp backend " + base.smtpAddr + ": master user admin, secret read from " + masterFile,
					"OK   backend   smtp backend " + base.smtpAddr + " (tls none): no TLS; offers login master_separator"}
			},
		},
		{
			name: "token logins: mechanism offered and login skipped, mechanism missing",
			edit: func(e *mailEnv) {
				e.IMAP = fmt.Sprintf("{address: %q, tls: none, login: token}", tokenIMAP)
				e.SMTP = fmt.Sprintf("{address: %q, tls: none, hostname: gw.test, login: token, token_mechanism: xoauth2}", base.smtpAddr)
			},
			user: "alice",
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"OK   backend   imap backend " + tokenIMAP + " (tls none): no TLS; offers login token",
					"FAIL backend   smtp backend " + base.smtpAddr + " does not offer AUTH XOAUTH2, needed for login: token",
					ok["routes"],
					"OK   route     imap alice → imap pool backend, member " + tokenIMAP + " (route from default); login token: the client's access token",
					"SKIP login     imap backend " + tokenIMAP + ": login token logs in with the client's access token; log in through saslgate to test it",
					"OK   route     smtp alice → smtp pool backend, member " + base.smtpAddr + " (route from default); login token: the client's access token",
					"SKIP login     smtp backend " + base.smtpAddr + ": not tried, it failed its check above"}
			},
		},
		{
			name: "token login: backend without AUTH=OAUTHBEARER",
			edit: func(e *mailEnv) { e.IMAP = fmt.Sprintf("{address: %q, tls: none, login: token}", base.imapAddr) },
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					"FAIL backend   imap backend " + base.imapAddr + " does not offer AUTH=OAUTHBEARER, needed for login: token",
					ok["smtp"]}
			},
		},
		{
			name: "certificate and key do not match",
			edit: func(e *mailEnv) { e.Dir = mismatchedDir },
			want: func(ok map[string]string) []string {
				return []string{"FAIL tls       certs: tls: private key does not match public key",
					ok["issuer"], ok["keys"], ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "certificate expired",
			edit: func(e *mailEnv) { e.Dir = expiredDir },
			want: func(ok map[string]string) []string {
				return []string{`FAIL tls       certificate "CN=mail.example.com" expired at 2024-03-01T12:00:00Z`,
					ok["issuer"], ok["keys"], ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "userinfo issuer without an endpoint",
			edit: func(e *mailEnv) {
				e.Issuer = fmt.Sprintf("{issuer: %q, mode: userinfo, insecure_skip_audience_check: true}", iss)
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"],
					"FAIL endpoint  " + iss + ": no userinfo_endpoint configured or in the metadata",
					ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
		{
			name: "introspection issuer with its endpoint",
			edit: func(e *mailEnv) {
				e.Issuer = fmt.Sprintf("{issuer: %q, mode: introspection, introspection_endpoint: %q, client_id: saslgate, client_secret_file: %q, audience: [saslgate]}",
					iss, iss+"/introspect", e.KeyFile)
			},
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"],
					"OK   endpoint  " + iss + ": introspection at " + iss + "/introspect",
					ok["secrets"], ok["imap"], ok["smtp"]}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := *base
			c.edit(&e)
			path := e.config(t)
			ok := e.okLines(path)
			args := []string{"check", "--config", path}
			if c.user != "" {
				args = append(args, "--user", c.user)
			}
			code, out, errs := runCmd(t, "", args...)

			want := append([]string{ok["config"]}, c.want(ok)...)
			failed, total := 0, 0
			for _, l := range want {
				if strings.HasPrefix(l, "FAIL ") {
					failed++
				}
				if !strings.HasPrefix(l, "SKIP ") {
					total++
				}
			}
			wantCode, wantErr := 1, fmt.Sprintf("saslgate: %d of %d checks failed\n", failed, total)
			if failed == 0 {
				wantCode, wantErr = 0, ""
				want = append(want, fmt.Sprintf("all %d checks passed", total))
			}
			if code != wantCode || out != lines(want...) || errs != wantErr {
				t.Errorf("%s: exit %d, stderr %q (want %d, %q)\n got:\n%s\nwant:\n%s", strings.Join(args, " "), code, errs, wantCode, wantErr, out, lines(want...))
			}
		})
	}
}

// imapBackend is the imap section's one backend.
func imapBackend(cfg *fileConfig) backends.Config { return sectionBackend(cfg, "imap") }

// sectionBackend is the protocol section's one backend.
func sectionBackend(cfg *fileConfig, protocol string) backends.Config {
	_, be := cfg.Sections[protocol].Backends()
	return be
}

// The login each backend check requires, by protocol and login mode: what the backend dialers
// send (backends.DialIMAP, DialPOP3, DialSMTP, DialSieve) must be in the capabilities the probe
// read, or the check names what is missing.
func TestMissingForLogin(t *testing.T) {
	const (
		pop3Caps  = "SASL PLAIN OAUTHBEARER|USER|RESP-CODES"
		sieveCaps = "IMPLEMENTATION Dovecot Pigeonhole|SASL PLAIN LOGIN OAUTHBEARER|SIEVE fileinto"
	)
	for _, c := range []struct {
		protocol, login, mech, caps, want string
	}{
		{"imap", "plain", "", "IMAP4rev1 AUTH=PLAIN", ""},
		{"imap", "master", "", "IMAP4rev1 AUTH=LOGIN", "AUTH=PLAIN"},
		{"imap", "master_separator", "", "IMAP4rev1 LOGINDISABLED", "LOGIN (it advertises LOGINDISABLED)"},
		{"imap", "token", "XOAUTH2", "IMAP4rev1 AUTH=OAUTHBEARER", "AUTH=XOAUTH2"},
		{"smtp", "master_separator", "", "AUTH LOGIN", "AUTH PLAIN"},
		{"smtp", "xclient", "", "XCLIENT ADDR", "XCLIENT LOGIN (is saslgate in smtpd_authorized_xclient_hosts?)"},

		{"pop3", "plain", "", pop3Caps, ""},
		{"pop3", "master", "", pop3Caps, ""},
		{"pop3", "login", "", pop3Caps, ""},
		{"pop3", "master_separator", "", pop3Caps, ""},
		{"pop3", "token", "OAUTHBEARER", pop3Caps, ""},
		{"pop3", "plain", "", "SASL OAUTHBEARER|USER", "SASL PLAIN in CAPA"},
		{"pop3", "master", "", "USER|PLAIN", "SASL PLAIN in CAPA"},
		{"pop3", "login", "", "SASL PLAIN", "USER in CAPA"},
		{"pop3", "master_separator", "", "SASL PLAIN|USERS", "USER in CAPA"},
		{"pop3", "master_separator", "", "USER", ""}, // USER "user*master" and PASS, not SASL
		{"pop3", "login", "", "-", ""},               // no CAPA at all: USER and PASS may still work
		{"pop3", "plain", "", "-", "SASL PLAIN in CAPA"},
		{"pop3", "token", "XOAUTH2", pop3Caps, "SASL XOAUTH2 in CAPA"},

		{"sieve", "plain", "", sieveCaps, ""},
		{"sieve", "master", "", sieveCaps, ""},
		{"sieve", "master_separator", "", sieveCaps, ""},
		{"sieve", "login", "", sieveCaps, ""},
		{"sieve", "token", "OAUTHBEARER", sieveCaps, ""},
		{"sieve", "plain", "", "SASL LOGIN", "SASL PLAIN"},
		{"sieve", "master", "", "SASL", "SASL PLAIN"},
		{"sieve", "master_separator", "", "SIEVE PLAIN|SASL LOGIN", "SASL PLAIN"},
		{"sieve", "master_separator", "", "SASL PLAIN", ""}, // PLAIN as user*master, not LOGIN
		{"sieve", "login", "", "SASL PLAIN", "SASL LOGIN"},
		{"sieve", "token", "XOAUTH2", sieveCaps, "SASL XOAUTH2"},
	} {
		var caps []string // "-": nil, a POP3 server without CAPA
		if c.caps != "-" {
			caps = strings.Split(c.caps, "|")
			if c.protocol == "imap" {
				caps = strings.Fields(c.caps)
			}
		}
		if got := missingForLogin(c.protocol, c.login, c.mech, caps); got != c.want {
			t.Errorf("%s login %s (%s) with %q: missing %q, want %q", c.protocol, c.login, c.mech, c.caps, got, c.want)
		}
	}
}

// scriptedBackend serves each connection of a loopback listener with serve, the reader and
// the connection to write to, and returns its address.
func scriptedBackend(t *testing.T, serve func(br *bufio.Reader, w net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(bufio.NewReader(c), c)
			}()
		}
	}()
	return ln.Addr().String()
}

// plainOK reports whether a base64 SASL PLAIN message is alice's with secret.
func plainOK(b64, secret string) bool {
	raw, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && string(raw) == "\x00alice\x00"+secret
}

// With POP3 and ManageSieve listeners, `saslgate check` reads each backend's capabilities
// with the probe (CAPA; the capability response), and with --user logs in there with AUTH
// PLAIN or AUTHENTICATE "PLAIN" and alice's derived secret, which the scripted backends check.
func TestCheckPOP3AndSieve(t *testing.T) {
	e := newMailEnv(t)
	key, err := backends.ReadHMACKeyFile(e.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	secret := backends.DeriveSecret(key, "alice").Reveal()
	var pop3Logins, sieveLogins atomic.Int32
	pop3Addr := scriptedBackend(t, func(br *bufio.Reader, w net.Conn) {
		fmt.Fprint(w, "+OK POP3 ready\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch {
			case cmd == "CAPA":
				fmt.Fprint(w, "+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n")
			case cmd == "AUTH" && plainOK(strings.TrimPrefix(arg, "PLAIN "), secret):
				pop3Logins.Add(1)
				fmt.Fprint(w, "+OK Logged in.\r\n")
			case cmd == "QUIT":
				fmt.Fprint(w, "+OK Bye\r\n")
				return
			default:
				fmt.Fprint(w, "-ERR [AUTH] no\r\n")
			}
		}
	})
	sieveAddr := scriptedBackend(t, func(br *bufio.Reader, w net.Conn) {
		fmt.Fprint(w, "\"IMPLEMENTATION\" \"scripted\"\r\n\"SASL\" \"PLAIN\"\r\n\"SIEVE\" \"fileinto\"\r\nOK \"ready\"\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSpace(line)
			switch ir, ok := strings.CutPrefix(line, `AUTHENTICATE "PLAIN" "`); {
			case ok && plainOK(strings.TrimSuffix(ir, `"`), secret):
				sieveLogins.Add(1)
				fmt.Fprint(w, "OK \"Logged in.\"\r\n")
			case line == "LOGOUT":
				fmt.Fprint(w, "OK \"Bye.\"\r\n")
				return
			default:
				fmt.Fprint(w, "NO \"no\"\r\n")
			}
		}
	})
	path := writeConfig(t, fmt.Sprintf(`
tls: {cert_file: %[1]s/cert.pem, key_file: %[1]s/key.pem}
listeners:
  - {name: pop3s, protocol: pop3, address: "127.0.0.1:0", tls: implicit}
  - {name: sieve, protocol: sieve, address: "127.0.0.1:0", tls: starttls}
pop3:
  backend: {address: %[2]q, tls: none}
sieve:
  backend: {address: %[3]q, tls: none}
secrets: {source: hmac, hmac_key_file: %[4]s}
tokens:
  issuers:
    - %[5]s
`, e.Dir, pop3Addr, sieveAddr, e.KeyFile, e.Issuer))
	ok := e.okLines(path)
	code, out, errs := runCmd(t, "", "check", "--config", path, "--user", "alice")
	want := lines(ok["config"], ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
		"OK   backend   pop3 backend "+pop3Addr+" (tls none): no TLS; offers login plain",
		"OK   backend   sieve backend "+sieveAddr+" (tls none): no TLS; offers login plain",
		"OK   routes    2 pool(s), 0 route source(s)",
		"OK   route     pop3 alice → pop3 pool backend, member "+pop3Addr+" (route from default); the user's secret from the secrets section",
		"OK   login     pop3 backend "+pop3Addr+" accepts alice with the derived secret",
		"OK   route     sieve alice → sieve pool backend, member "+sieveAddr+" (route from default); the user's secret from the secrets section",
		"OK   login     sieve backend "+sieveAddr+" accepts alice with the derived secret",
		"all 12 checks passed")
	if code != 0 || out != want || errs != "" {
		t.Errorf("check --user alice: exit %d, stderr %q\n got:\n%s\nwant:\n%s", code, errs, out, want)
	}
	if pop3Logins.Load() != 1 || sieveLogins.Load() != 1 {
		t.Errorf("backend logins: pop3 %d, sieve %d; want one each", pop3Logins.Load(), sieveLogins.Load())
	}
}
