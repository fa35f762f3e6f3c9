package binding

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, key any, pub any, alg x509.SignatureAlgorithm) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(1),
		Subject:            pkix.Name{CommonName: "binding test"},
		DNSNames:           []string{"mail.example.com"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func p256(t *testing.T, alg x509.SignatureAlgorithm) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return selfSigned(t, key, &key.PublicKey, alg)
}

// handshake connects a client and a server over net.Pipe and returns both states.
func handshake(t *testing.T, srvCfg *tls.Config, version uint16) (client, server tls.ConnectionState) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := tls.Client(a, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.com", MinVersion: version, MaxVersion: version})
	sc := tls.Server(b, srvCfg)
	errc := make(chan error, 1)
	go func() { errc <- sc.Handshake() }()
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return cc.ConnectionState(), sc.ConnectionState()
}

func TestCertThumbprint(t *testing.T) {
	der := []byte("not really DER, but hashed all the same")
	sum := sha256.Sum256(der)
	got := CertThumbprint(der)
	if strings.ContainsAny(got, "=+/") || len(got) != 43 {
		t.Errorf("CertThumbprint = %q, want unpadded base64url of 32 bytes", got)
	}
	if want := strings.NewReplacer("+", "-", "/", "_", "=", "").Replace(base64.StdEncoding.EncodeToString(sum[:])); got != want {
		t.Errorf("CertThumbprint = %q, want %q", got, want)
	}
}

func TestExporterData(t *testing.T) {
	cert := p256(t, x509.ECDSAWithSHA256)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	c, s := handshake(t, cfg, tls.VersionTLS13)
	cd, err := ExporterData(c)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := ExporterData(s)
	if err != nil || len(sd) != 32 || !bytes.Equal(cd, sd) {
		t.Fatalf("server %x %v, client %x: want 32 equal bytes", sd, err, cd)
	}
	c2, _ := handshake(t, cfg, tls.VersionTLS13)
	if other, _ := ExporterData(c2); bytes.Equal(other, cd) {
		t.Error("two connections share tls-exporter data")
	}
	c12, s12 := handshake(t, cfg, tls.VersionTLS12)
	for _, cs := range []tls.ConnectionState{c12, s12} {
		if _, err := Data(cs, TLSExporter); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "TLS 1.3") {
			t.Errorf("tls-exporter on TLS 1.2: %v, want ErrUnsupported naming TLS 1.3", err)
		}
	}
}

func TestServerEndPointData(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name string
		cert tls.Certificate
		hash func([]byte) []byte
	}{
		{"ECDSA SHA-256", p256(t, x509.ECDSAWithSHA256), func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }},
		{"ECDSA SHA-384", selfSigned(t, key, &key.PublicKey, x509.ECDSAWithSHA384), func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }},
		{"ECDSA SHA-512", selfSigned(t, key, &key.PublicKey, x509.ECDSAWithSHA512), func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }},
		{"Ed25519 undefined", selfSigned(t, edKey, edKey.Public(), x509.PureEd25519), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &tc.cert, nil }}
			cfg, served := ServerConfig(base)
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				c, s := handshake(t, cfg, v)
				leaf, err := served.Leaf()
				if err != nil || leaf == nil || !bytes.Equal(leaf.Raw, tc.cert.Certificate[0]) {
					t.Fatalf("Served.Leaf = %v, %v", leaf, err)
				}
				cd, cerr := Data(c, TLSServerEndPoint)
				sd, serr := ServerData(s, leaf, TLSServerEndPoint)
				if tc.hash == nil {
					if !errors.Is(cerr, ErrUnsupported) || !errors.Is(serr, ErrUnsupported) {
						t.Fatalf("errors %v, %v; want ErrUnsupported", cerr, serr)
					}
					continue
				}
				if cerr != nil || serr != nil || !bytes.Equal(cd, sd) || !bytes.Equal(sd, tc.hash(tc.cert.Certificate[0])) {
					t.Fatalf("%s: client %x %v, server %x %v", tls.VersionName(v), cd, cerr, sd, serr)
				}
			}
		})
	}
}

func TestServerConfigCertificates(t *testing.T) {
	cert := p256(t, x509.ECDSAWithSHA256)
	cfg, served := ServerConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	if leaf, _ := served.Leaf(); leaf != nil {
		t.Fatal("Leaf before any handshake")
	}
	handshake(t, cfg, tls.VersionTLS13)
	if leaf, err := served.Leaf(); err != nil || !bytes.Equal(leaf.Raw, cert.Certificate[0]) {
		t.Fatalf("Leaf = %v, %v", leaf, err)
	}
}

func TestDataUnknownType(t *testing.T) {
	for _, typ := range []string{"tls-unique", "", "TLS-EXPORTER"} {
		if _, err := ServerData(tls.ConnectionState{Version: tls.VersionTLS13}, nil, typ); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%q: %v, want ErrUnsupported", typ, err)
		}
	}
}
