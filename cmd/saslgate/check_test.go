package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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
		imapAddr: cfg.Sections["imap"].BackendConfig().Address,
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
		ok["imap"], ok["imap login"], ok["smtp"], ok["smtp login"], http,
		"all 10 checks passed")
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
					ok["smtp"], ok["smtp login"]}
			},
		},
		{
			name: "backends provisioned with another key",
			edit: func(e *mailEnv) { e.KeyFile = otherKey },
			user: "alice",
			want: func(ok map[string]string) []string {
				return []string{ok["tls"], ok["issuer"], ok["keys"], ok["secrets"],
					ok["imap"], `FAIL login     backends: imap backend ` + base.imapAddr + ` rejected login for "alice": NO [AUTHENTICATIONFAILED] Authentication failed`,
					ok["smtp"], `FAIL login     backends: smtp backend ` + base.smtpAddr + ` rejected login for "alice": backend replied 535 5.7.8 Authentication credentials invalid`}
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
					ok["imap"], ok["smtp"]}
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
					"SKIP login     imap backend " + tokenIMAP + ": login token logs in with the client's access token; log in through saslgate to test it",
					"FAIL backend   smtp backend " + base.smtpAddr + " does not offer AUTH XOAUTH2, needed for login: token"}
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
