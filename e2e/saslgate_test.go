package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// gate is one running `saslgate serve`.
type gate struct {
	imaps      string // implicit-TLS IMAP listener
	starttls   string // STARTTLS IMAP listener
	smtps      string // implicit-TLS SMTP submission listener (RFC 8314, port 465 style); "" without SMTP
	submission string // STARTTLS SMTP submission listener (RFC 6409, port 587 style); "" without SMTP
	conf       string
	log        string
	proc       *proc
}

// buildSaslgate compiles ./cmd/saslgate once for the whole run.
func buildSaslgate(dir string) (string, error) {
	bin := filepath.Join(dir, "saslgate")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/saslgate")...)
	cmd.Dir = moduleRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/saslgate: %v\n%s", err, out)
	}
	return bin, nil
}

// writeCert writes a self-signed ECDSA certificate for 127.0.0.1 and localhost. It is
// its own CA (basicConstraints CA:TRUE), so curl --cacert, Python's ssl and Go's
// x509.CertPool all accept it as the trust anchor.
func writeCert(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "saslgate e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, nil
}

// gateConfig is what differs between the saslgate instances of a run.
type gateConfig struct {
	name        string
	backendAddr string
	issuers     []string // the first one is the IdP; others are unreachable issuers
	certFile    string
	keyFile     string
	hmacKeyFile string
	// smtpBackendAddr is the Postfix submission service; "" for an IMAP-only saslgate.
	smtpBackendAddr string
}

// startSaslgate writes the top-level YAML config of CONTRACT.md and runs
// `saslgate serve --config FILE`.
func startSaslgate(ctx context.Context, dir, bin string, c gateConfig) (*gate, error) {
	g := &gate{
		conf: filepath.Join(dir, c.name+".yaml"),
		log:  filepath.Join(dir, c.name+".log"),
	}
	var err error
	if g.imaps, err = freePort(); err != nil {
		return nil, err
	}
	if g.starttls, err = freePort(); err != nil {
		return nil, err
	}
	_, imapsPort, _ := net.SplitHostPort(g.imaps)
	issuers := ""
	for _, iss := range c.issuers {
		issuers += fmt.Sprintf(`    - issuer: %s
      mode: jwt
      audience: [%s]
      username_claim: email
      scopes: {imap: [email], smtp: [smtp]}
`, strconv.Quote(iss), idpAudience)
	}
	smtpListeners, smtpSection := "", ""
	if c.smtpBackendAddr != "" {
		if g.smtps, err = freePort(); err != nil {
			return nil, err
		}
		if g.submission, err = freePort(); err != nil {
			return nil, err
		}
		_, smtpsPort, _ := net.SplitHostPort(g.smtps)
		smtpListeners = fmt.Sprintf(`  - name: smtps
    protocol: smtp
    address: %[1]s
    tls: implicit
    public_host: 127.0.0.1
    public_port: %[2]s
  - name: submission
    protocol: smtp
    address: %[3]s
    tls: starttls
`, g.smtps, smtpsPort, g.submission)
		// max_line_length stays at its default (64 KiB), which the oversize test exceeds.
		smtpSection = fmt.Sprintf(`smtp:
  backend: {address: %[1]s, tls: none, login: plain, timeout: 5s, hostname: saslgate.e2e.test}
  preauth_timeout: 30s
  error_reply_timeout: 1s
`, c.smtpBackendAddr)
	}
	// error_reply_timeout is short so the "silent client" test stays fast; the cache
	// TTL is short because tests reuse one token across deliberately broken backends.
	conf := fmt.Sprintf(`# generated by saslgate e2e
log: {level: debug, format: text}
tls: {cert_file: %[1]q, key_file: %[2]q}
listeners:
  - name: imaps
    protocol: imap
    address: %[3]s
    tls: implicit
    public_host: 127.0.0.1
    public_port: %[4]s
  - name: imap-starttls
    protocol: imap
    address: %[5]s
    tls: starttls
%[9]simap:
  backend: {address: %[6]s, tls: none, login: plain, timeout: 5s}
  allow_token_as_login_password: false
  preauth_timeout: 30s
  error_reply_timeout: 1s
%[10]ssecrets: {source: hmac, hmac_key_file: %[7]q}
# The bad-token tests fail on purpose, many times, from one address.
limits: {skip_auth_delay: true}
tokens:
  issuers:
%[8]s  cache: {ttl: 1m, size: 1000}
`, c.certFile, c.keyFile, g.imaps, imapsPort, g.starttls, c.backendAddr, c.hmacKeyFile, issuers, smtpListeners, smtpSection)
	if err := os.WriteFile(g.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	g.proc, err = startProc(c.name, g.log, nil, nil, 0, bin, "serve", "--config", g.conf)
	if err != nil {
		return g, err
	}
	for _, a := range []string{g.imaps, g.starttls, g.smtps, g.submission} {
		if a == "" {
			continue
		}
		if err := waitPort(ctx, a, g.proc); err != nil {
			return g, err
		}
	}
	return g, nil
}

// tlsConfig trusts the run's self-signed certificate.
func (e *env) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: e.certPool, ServerName: "127.0.0.1"}
}
