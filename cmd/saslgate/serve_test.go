package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	proxyimap "github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/tls/certs"
)

var listeningLog = regexp.MustCompile(`msg=listening listener=(\S+) .*address=(\S+)`)

// serving is `saslgate serve` running in this process.
type serving struct {
	addrs map[string]string // listener name → bound address, as logged
	// stop cancels serve as SIGTERM would and returns what it logged after it started and its
	// result. Calls after the first return the same.
	stop func() (string, error)
}

// runServe runs `saslgate serve --config path` and reads its log until it says it started.
func runServe(t *testing.T, path string) *serving {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := serveCmd(ctx, []string{"--config", path, "--shutdown-timeout", "5s"}, w)
		w.Close()
		done <- err
	}()
	s := &serving{addrs: map[string]string{}}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			cancel()
			t.Fatalf("serve stopped before it started: %v", <-done)
		}
		if m := listeningLog.FindStringSubmatch(line); m != nil {
			s.addrs[m[1]] = m[2]
		}
		if strings.Contains(line, `msg="saslgate started"`) {
			break
		}
	}
	logs := make(chan string, 1)
	go func() {
		rest, _ := io.ReadAll(br)
		logs <- string(rest)
	}()
	s.stop = sync.OnceValues(func() (string, error) {
		cancel()
		err := <-done
		return <-logs, err
	})
	t.Cleanup(func() { s.stop() })
	return s
}

// An admin turns on the http section, starts the gateway and reads what mail clients will
// read: the autoconfig document, WebFinger's issuer link and the RFC 9728 metadata. The
// issuer's metadata is at a discovery_url of its own, as some IdPs have it, and names the
// authorization and token endpoints the autoconfig document passes on to Thunderbird.
func TestServeHTTP(t *testing.T) {
	e := newMailEnv(t)
	iss := e.issuer.URL()
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer": %q, "authorization_endpoint": %q, "token_endpoint": %q, "jwks_uri": %q}`,
			iss, iss+"/authorize", iss+"/token", iss+"/jwks")
	}))
	defer meta.Close()
	e.Issuer = fmt.Sprintf("{issuer: %q, discovery_url: %q, audience: [saslgate], scopes: {imap: [mail.read], smtp: [mail.send]}}", iss, meta.URL+"/oidc")
	e.Extra = `http: {address: "127.0.0.1:0", tls: true, domains: [example.com, example.org], display_name: "Example Mail", resource: "https://mail.example.com"}`
	s := runServe(t, e.config(t))

	// The http listener serves the gateway's certificate.
	pem, err := os.ReadFile(filepath.Join(e.Dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	get := func(path string) (string, string) {
		t.Helper()
		resp, err := client.Get("https://" + s.addrs["http"] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s, %v\n%s", path, resp.Status, err, b)
		}
		return resp.Header.Get("Content-Type"), string(b)
	}

	autoconfig := `<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.org">
    <domain>example.com</domain>
    <domain>example.org</domain>
    <displayName>Example Mail</displayName>
    <displayShortName>Example Mail</displayShortName>
    <incomingServer type="imap">
      <hostname>mail.example.com</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <authentication>OAuth2</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>mail.example.com</hostname>
      <port>143</port>
      <socketType>STARTTLS</socketType>
      <authentication>OAuth2</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>mail.example.com</hostname>
      <port>465</port>
      <socketType>SSL</socketType>
      <authentication>OAuth2</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
  <oAuth2>
    <issuer>` + strings.TrimPrefix(iss, "http://") + `</issuer>
    <scope>openid offline_access mail.read mail.send</scope>
    <authURL>` + iss + `/authorize</authURL>
    <tokenURL>` + iss + `/token</tokenURL>
  </oAuth2>
</clientConfig>
`
	for _, path := range []string{
		"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40example.org",
		"/mail/config-v1.1.xml?emailaddress=bob%40example.org",
	} {
		if ct, body := get(path); ct != "application/xml; charset=utf-8" || body != autoconfig {
			t.Errorf("GET %s: %s\n%s\nwant:\n%s", path, ct, body, autoconfig)
		}
	}

	webfinger := `{"subject":"acct:alice@example.com","links":[{"rel":"http://openid.net/specs/connect/1.0/issuer","href":"` + iss + `"}]}` + "\n"
	if ct, body := get("/.well-known/webfinger?resource=acct%3Aalice%40example.com"); ct != "application/jrd+json" || body != webfinger {
		t.Errorf("WebFinger: %s %s\nwant %s", ct, body, webfinger)
	}

	resource := `{"resource":"https://mail.example.com","authorization_servers":["` + iss + `"],"scopes_supported":["mail.read","mail.send"],` +
		`"resource_name":"Example Mail","tls_client_certificate_bound_access_tokens":false}`
	if ct, body := get("/.well-known/oauth-protected-resource"); ct != "application/json" || body != resource {
		t.Errorf("RFC 9728 metadata: %s %s\nwant %s", ct, body, resource)
	}

	logs, err := s.stop()
	if err != nil {
		t.Errorf("serve returned %v after a clean stop", err)
	}
	if !strings.Contains(logs, `msg="shutting down"`) || strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") {
		t.Errorf("log after the start:\n%s", logs)
	}
	if c, err := net.Dial("tcp", s.addrs["http"]); err == nil {
		c.Close()
		t.Error("the http listener still accepts connections after serve returned")
	}
}

// A gateway whose backend logs in as a master user starts without a secrets section; a master
// secret file it cannot read stops the start, naming the section.
func TestStartGatewayMasterLogin(t *testing.T) {
	cfg, _ := adminEnv(t)
	cfg.Secrets = backends.SecretsConfig{}
	b := cfg.Sections["imap"].(*proxyimap.Config)
	b.Backend.Login, b.Backend.MasterUser = backends.LoginMaster, "admin"
	b.Backend.MasterSecretFile = filepath.Join(t.TempDir(), "master.secret")
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.needsSecrets() {
		t.Fatal("needsSecrets with login master")
	}
	if _, err := startGateway(context.Background(), cfg, certs.FromCertificate(cert), slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "imap pool backend, member ") {
		t.Fatalf("startGateway with a missing master secret file: %v", err)
	}
	if err := os.WriteFile(b.Backend.MasterSecretFile, []byte("m4ster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg)
	if _, err := g.live.Secret(context.Background(), "alice"); !errors.Is(err, backends.ErrUnknownUser) {
		t.Errorf("the gateway without secrets gave alice a secret: %v", err)
	}
}
