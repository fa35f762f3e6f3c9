package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/tls/certs"
)

// writeCert writes a fresh self-signed certificate and its key to dir and returns the
// certificate's DER.
func writeCert(t *testing.T, dir string) []byte {
	t.Helper()
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	// Rename into place, as certbot and cert-manager do, so no reader sees half a file.
	for name, data := range map[string][]byte{"cert.pem": certPEM, "key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})} {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return cert.Certificate[0]
}

const reloadConfig = `
tls: {cert_file: %[1]s/cert.pem, key_file: %[1]s/key.pem}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:0", tls: implicit}
imap:
  backend: {address: "127.0.0.1:1", tls: none}
secrets: {source: hmac, hmac_key_file: %[1]s/hmac.key}
tokens:
  issuers:
    - {issuer: "%[2]s", audience: [saslgate], username_claim: sub}
`

// SIGHUP's reload: a new certificate is served from the next handshake while an open session
// goes on; new secrets and issuers apply at once; a broken file changes nothing.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cert1 := writeCert(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "hmac.key"), []byte("first-key-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "saslgate.yaml")
	writeText := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeText(fmt.Sprintf(reloadConfig, dir, "https://idp-one.example"))
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	store, err := certs.Load(cfg.TLS, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g, err := startGateway(ctx, cfg, store, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		g.shutdown(sctx)
	}()
	addr := g.addrs["imaps"].String()
	handshake := func() (*tls.Conn, []byte) {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.ConnectionState().PeerCertificates[0].Raw
	}
	open, served := handshake()
	if !bytes.Equal(served, cert1) {
		t.Fatal("first handshake did not serve the first certificate")
	}
	br := bufio.NewReader(open)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "* OK ") {
		t.Fatalf("greeting %q", line)
	}
	secret1, err := g.live.Secret(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}

	// A broken file is rejected: nothing changes.
	writeText("tokens: [\n")
	if next, err := reload(ctx, path, cfg, g.live, store, logger); err == nil || next != cfg {
		t.Fatalf("broken file: reload = %v; want an error and the running configuration", err)
	}
	// A file whose certificate does not load is rejected as a whole too.
	writeText(fmt.Sprintf(reloadConfig, t.TempDir(), "https://idp-two.example"))
	if _, err := reload(ctx, path, cfg, g.live, store, logger); err == nil {
		t.Fatal("missing certificate files: reload succeeded")
	}
	if _, served := handshake(); !bytes.Equal(served, cert1) {
		t.Error("a rejected reload changed the certificate")
	}

	// New certificate, key and issuer.
	cert2 := writeCert(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "hmac.key"), []byte("second-key-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeText(fmt.Sprintf(reloadConfig, dir, "https://idp-two.example") + "limits: {max_connections: 5}\n")
	next, err := reload(ctx, path, cfg, g.live, store, logger)
	if err != nil {
		t.Fatal(err)
	}
	if next.Tokens.Issuers[0].Issuer != "https://idp-two.example" || next.Limits.MaxConnections != 0 {
		t.Errorf("applied configuration: issuer %q, max_connections %d; want the new issuer and the running limits", next.Tokens.Issuers[0].Issuer, next.Limits.MaxConnections)
	}
	if !strings.Contains(logs.String(), "restart_needed=[limits]") {
		t.Errorf("log does not say limits need a restart:\n%s", logs.String())
	}
	if secret2, _ := g.live.Secret(ctx, "alice"); secret2 == secret1 {
		t.Error("secret unchanged after the HMAC key was replaced and reloaded")
	}
	if _, served := handshake(); !bytes.Equal(served, cert2) {
		t.Error("the next handshake after reload did not serve the new certificate")
	}
	// The session opened before the reload goes on.
	open.Write([]byte("a NOOP\r\n"))
	open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "a OK") {
		t.Errorf("open session after reload: %q, want a OK", line)
	}
}
