package backends

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/saslgate/saslgate/internal/config"
)

// testCert returns a self-signed certificate for 127.0.0.1 and localhost, and a CA file
// trusting it.
func testCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "saslgate test backend"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

const (
	alicePass = "s3cret"
	bobUser   = "bob@example.com"
	bobPass   = "pa\"ss\\wörd" // needs a literal for LOGIN
)

// startMemServer starts go-imap's in-memory server on loopback with TLS mode tlsMode and
// returns its address and a CA file trusting its certificate.
func startMemServer(t *testing.T, tlsMode string) (string, string) {
	t.Helper()
	cert, caFile := testCert(t)
	mem := imapmemserver.New()
	mem.AddUser(imapmemserver.NewUser("alice", alicePass))
	mem.AddUser(imapmemserver.NewUser(bobUser, bobPass))
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:   imap.CapSet{imap.CapIMAP4rev1: {}},
		Logger: log.New(io.Discard, "", 0),
	}
	srvTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	switch tlsMode {
	case "none":
		opts.InsecureAuth = true
	case "starttls":
		opts.TLSConfig = srvTLS // InsecureAuth off: AUTH= and LOGIN only after STARTTLS
	case "implicit":
		ln = tls.NewListener(ln, srvTLS)
	}
	srv := imapserver.New(opts)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), caFile
}

// checkLoggedIn proves the session is authenticated by running LIST over it.
func checkLoggedIn(t *testing.T, sess *IMAPSession) {
	t.Helper()
	_ = sess.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(sess.Conn, "X1 LIST \"\" \"*\"\r\n"); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := sess.Reader.ReadString('\n')
		if err != nil {
			t.Fatalf("reading LIST reply: %v", err)
		}
		if strings.HasPrefix(line, "X1 ") {
			if !strings.HasPrefix(line, "X1 OK") {
				t.Fatalf("LIST after login: %q", line)
			}
			return
		}
	}
}

func TestDialIMAPMemServer(t *testing.T) {
	for _, tlsMode := range []string{"none", "starttls", "implicit"} {
		addr, caFile := startMemServer(t, tlsMode)
		for _, login := range []string{"plain", "login"} {
			for _, cred := range []struct{ user, pass string }{{"alice", alicePass}, {bobUser, bobPass}} {
				t.Run(tlsMode+"/"+login+"/"+cred.user, func(t *testing.T) {
					cfg := Config{Address: addr, TLS: tlsMode, Login: login, Timeout: config.Duration(5 * time.Second)}
					if tlsMode != "none" {
						cfg.CAFile = caFile
					}
					sess, err := DialIMAP(context.Background(), cfg, cred.user, Secret(cred.pass), Client{})
					if err != nil {
						t.Fatal(err)
					}
					defer sess.Close()
					if _, isTLS := sess.Conn.(*tls.Conn); isTLS != (tlsMode != "none") {
						t.Errorf("Conn is %T with tls %q", sess.Conn, tlsMode)
					}
					if !slices.Contains(sess.Capabilities, "IMAP4rev1") {
						t.Errorf("Capabilities = %q, want IMAP4rev1", sess.Capabilities)
					}
					for _, c := range sess.Capabilities {
						if u := strings.ToUpper(c); strings.HasPrefix(u, "AUTH=") || u == "SASL-IR" || u == "STARTTLS" || u == "LOGINDISABLED" {
							t.Errorf("pre-auth capability %q passed on: %q", c, sess.Capabilities)
						}
					}
					checkLoggedIn(t, sess)
				})
			}
		}
		t.Run(tlsMode+"/bad password", func(t *testing.T) {
			cfg := Config{Address: addr, TLS: tlsMode, CAFile: caFile}
			if tlsMode == "none" {
				cfg.CAFile = ""
			}
			for _, login := range []string{"plain", "login"} {
				cfg.Login = login
				_, err := DialIMAP(context.Background(), cfg, "alice", "wrong-password-42", Client{})
				if !errors.Is(err, ErrRejected) || errors.Is(err, ErrUnavailable) {
					t.Fatalf("%s: err = %v, want ErrRejected", login, err)
				}
				if strings.Contains(err.Error(), "wrong-password-42") || !strings.Contains(err.Error(), "NO") {
					t.Errorf("%s: err = %v: want backend text, never the secret", login, err)
				}
			}
		})
		if tlsMode != "none" {
			t.Run(tlsMode+"/untrusted certificate", func(t *testing.T) {
				_, err := DialIMAP(context.Background(), Config{Address: addr, TLS: tlsMode}, "alice", alicePass, Client{})
				var unknown x509.UnknownAuthorityError
				if !errors.Is(err, ErrUnavailable) || !errors.As(err, &unknown) {
					t.Fatalf("err = %v, want ErrUnavailable wrapping x509.UnknownAuthorityError", err)
				}
			})
			t.Run(tlsMode+"/wrong server name", func(t *testing.T) {
				cfg := Config{Address: addr, TLS: tlsMode, CAFile: caFile, ServerName: "imap.example.net"}
				if _, err := DialIMAP(context.Background(), cfg, "alice", alicePass, Client{}); !errors.Is(err, ErrUnavailable) {
					t.Fatalf("err = %v, want ErrUnavailable", err)
				}
			})
			t.Run(tlsMode+"/insecure skip verify", func(t *testing.T) {
				cfg := Config{Address: addr, TLS: tlsMode, InsecureSkipVerify: true}
				sess, err := DialIMAP(context.Background(), cfg, "alice", alicePass, Client{})
				if err != nil {
					t.Fatal(err)
				}
				sess.Close()
			})
		}
	}
}

func TestDialIMAPClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = DialIMAP(context.Background(), Config{Address: addr, TLS: "none"}, "alice", alicePass, Client{})
	if !errors.Is(err, ErrUnavailable) || !strings.HasPrefix(err.Error(), "backends: ") {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestDialIMAPRefusesUsernameBeforeSending(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	cfg := Config{Address: ln.Addr().String(), TLS: "none"}
	for _, user := range []string{"alice\r\nA1 LOGOUT", "alice\n", "ali\x00ce", "", strings.Repeat("a", 256)} {
		_, err := DialIMAP(context.Background(), cfg, user, alicePass, Client{})
		if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "not sent") {
			t.Errorf("user %q: err = %v, want ErrRejected, not sent", user, err)
		}
		if strings.ContainsAny(errString(err), "\r\n\x00") {
			t.Errorf("user %q: error text carries raw control bytes: %q", user, err)
		}
	}
	for _, secret := range []Secret{"", "se\x00cret"} {
		if _, err := DialIMAP(context.Background(), cfg, "alice", secret, Client{}); !errors.Is(err, ErrRejected) {
			t.Errorf("bad secret: err = %v, want ErrRejected", err)
		}
	}
	ln.Close()
	select {
	case <-accepted:
		t.Error("a connection was made for a refused username")
	default:
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
