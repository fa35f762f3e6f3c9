package binding

import (
	"bytes"
	"context"
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
	"encoding/hex"
	"encoding/pem"
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

// The RFC 9266 §2 exporter is written out here, not taken from binding.go, so that a changed
// label, context or length there fails: label "EXPORTER-Channel-Binding", empty context,
// 32 bytes.
func rfc9266Exporter(t *testing.T, cs tls.ConnectionState) []byte {
	t.Helper()
	ekm, err := cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
	if err != nil {
		t.Fatalf("%s: crypto/tls exporter: %v", tls.VersionName(cs.Version), err)
	}
	return ekm
}

// Each end's ExporterData is what the other end's own RFC 9266 exporter computes. On
// TLS 1.2 crypto/tls would export (both ends negotiate Extended Master Secret), and
// ExporterData still refuses: the TLS 1.3 rule is binding's, as its doc says.
func TestExporterDataAgainstPeer(t *testing.T) {
	cfg := &tls.Config{Certificates: []tls.Certificate{p256(t, x509.ECDSAWithSHA256)}}
	for _, tc := range []struct {
		version uint16
		refused bool
	}{
		{tls.VersionTLS13, false},
		{tls.VersionTLS12, true},
	} {
		t.Run(tls.VersionName(tc.version), func(t *testing.T) {
			client, server := handshake(t, cfg, tc.version)
			for _, end := range []struct {
				name       string
				self, peer tls.ConnectionState
			}{
				{"client", client, server},
				{"server", server, client},
			} {
				want := rfc9266Exporter(t, end.peer)
				got, err := ExporterData(end.self)
				viaData, dataErr := Data(end.self, "tls-exporter")
				if tc.refused {
					if got != nil || !errors.Is(err, ErrUnsupported) || viaData != nil || !errors.Is(dataErr, ErrUnsupported) {
						t.Errorf("%s: ExporterData = %x, %v; Data = %x, %v; want nil and ErrUnsupported", end.name, got, err, viaData, dataErr)
					}
					continue
				}
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: ExporterData = %x, %v; the peer's RFC 9266 exporter gives %x", end.name, got, err, want)
				}
				if dataErr != nil || !bytes.Equal(viaData, want) {
					t.Errorf("%s: Data(tls-exporter) = %x, %v; want %x", end.name, viaData, dataErr, want)
				}
			}
		})
	}
}

// vectors are certificates made with OpenSSL 3.0 (openssl req -x509 -sha1, -sha256, -sha384),
// with their tls-server-end-point data and x5t#S256 computed from the DER outside Go
// (openssl dgst, cross-checked with Python's hashlib). RFC 5929 §4.1: the hash of the
// certificate's signature algorithm, SHA-256 when that is MD5 or SHA-1.
var vectors = []struct {
	name     string
	alg      x509.SignatureAlgorithm
	endPoint string // hex
	x5t      string
	pem      string
}{
	{
		name: "ECDSA with SHA-1", alg: x509.ECDSAWithSHA1,
		endPoint: "8034c64c57a72fd80bffbfd0a50a52c8b2590c0bb4220ce2e2274af737dd39b7",
		x5t:      "gDTGTFenL9gL_7_QpQpSyLJZDAu0Igzi4idK9zfdObc",
		pem: `-----BEGIN CERTIFICATE-----
MIIBezCCASOgAwIBAgIBATAJBgcqhkjOPQQBMB0xGzAZBgNVBAMMEmVjZHNhLXNo
YTEuZXhhbXBsZTAgFw0yNjEyMDYyMTQyMTBaGA8yMTI2MTExMjIxNDIxMFowHTEb
MBkGA1UEAwwSZWNkc2Etc2hhMS5leGFtcGxlMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEVHlZIYpoM4JktT0kSTzzMi5K9GZnI1Ptc09moLJaHpx4fu5kj49yGM48
Wbk8iC3o1grF6HnZEjxasOCybhbcBKNTMFEwHQYDVR0OBBYEFKBdJ6KmqIB+7yuU
saxZ5AOa1qw9MB8GA1UdIwQYMBaAFKBdJ6KmqIB+7yuUsaxZ5AOa1qw9MA8GA1Ud
EwEB/wQFMAMBAf8wCQYHKoZIzj0EAQNHADBEAiB2Te9UHVRGnOfHj2HxJ5Wd65lg
Ti/+5AvxbWaQxqk2LAIgHttZjbCF33FXgEJE0iXvPuXiYpTXi+6bCgkt3tHezdc=
-----END CERTIFICATE-----`,
	},
	{
		name: "RSA with SHA-1", alg: x509.SHA1WithRSA,
		endPoint: "63f2bbdad9f899e2d09879fafa0988d5d28fcdca3f17e80538232b7f123817a8",
		x5t:      "Y_K72tn4meLQmHn6-gmI1dKPzco_F-gFOCMrfxI4F6g",
		pem: `-----BEGIN CERTIFICATE-----
MIIDBjCCAe6gAwIBAgIBBDANBgkqhkiG9w0BAQUFADAbMRkwFwYDVQQDDBByc2Et
c2hhMS5leGFtcGxlMCAXDTI2MTIwNjIxNDIxMVoYDzIxMjYxMTEyMjE0MjExWjAb
MRkwFwYDVQQDDBByc2Etc2hhMS5leGFtcGxlMIIBIjANBgkqhkiG9w0BAQEFAAOC
AQ8AMIIBCgKCAQEAlZAW0aL0HwdgZBYkXnJCsVaPpYFk5NkY5uOknBbksyCpM4n1
nSMlQnfSY3fvSBAvN1qltcTuY68LPZIY70Nk3VFojYQ9rqPJdHDlwwKQ7XICv7v1
2A95jam1Zs9lAqW59tqT4JWsu+dSnBGvu6c4Zh9OgmxPkx2gQYxxoo/i5CkijoBx
oprKjnQz8YC/sZtobJuHw2OlZOBiSO4ATS0q0/TAgAOgVXnElkGvN+DdU2g0wRzf
8YHyIVSZusHHZjebaSjoR4MqEjs4VTTSV2w/WbdYls4LSgwcQh3bC1b5mVrwCrGP
6q9jA8Rt9e1dZdccW8I9qL9pftCeNGg4yqHysQIDAQABo1MwUTAdBgNVHQ4EFgQU
YkdvWpxDfvHt4ue4TYMOhhl7g8owHwYDVR0jBBgwFoAUYkdvWpxDfvHt4ue4TYMO
hhl7g8owDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0BAQUFAAOCAQEARyhnvO6j
Jfxba87mJkbI6d6xMbH4TE2xopEKNlExL3+i412nlo+mA1pURUX0K+CYUNmRhlXZ
gB86XP+e5Ep/Z/XxIiI7FnQwz5PNHxJd+4JqaJ0pffzwdUxGaEcFdnzl4LEvPmI1
BO7ui/Igx0JSb4N+lHiFYe5IQcPWjcnBsReOTl3PtbL9kjUcftbAEoxc8XD+aTYr
XsXZQcU69g4CIJo0eUOwGBK2AjCcrAsxJLkNb1PHPZkT62DhfIrPFHy+jVDyM7i5
6PQreMqPfJtpv6TW0DaY/DDfoPKEKJMbO+dg71Qi0dorO2Y4KzLChOCsgZ4dEMwb
kPoE70XpwWWB+A==
-----END CERTIFICATE-----`,
	},
	{
		name: "ECDSA with SHA-256", alg: x509.ECDSAWithSHA256,
		endPoint: "c784dfe25521aa24065a95ff205c88c31ccc95bf9ae1c4eb21a34e9b3ca47c6e",
		x5t:      "x4Tf4lUhqiQGWpX_IFyIwxzMlb-a4cTrIaNOmzykfG4",
		pem: `-----BEGIN CERTIFICATE-----
MIIBgTCCASigAwIBAgIBAjAKBggqhkjOPQQDAjAfMR0wGwYDVQQDDBRlY2RzYS1z
aGEyNTYuZXhhbXBsZTAgFw0yNjEyMDYyMTQyMTBaGA8yMTI2MTExMjIxNDIxMFow
HzEdMBsGA1UEAwwUZWNkc2Etc2hhMjU2LmV4YW1wbGUwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAARUeVkhimgzgmS1PSRJPPMyLkr0ZmcjU+1zT2agsloenHh+7mSP
j3IYzjxZuTyILejWCsXoedkSPFqw4LJuFtwEo1MwUTAdBgNVHQ4EFgQUoF0noqao
gH7vK5SxrFnkA5rWrD0wHwYDVR0jBBgwFoAUoF0noqaogH7vK5SxrFnkA5rWrD0w
DwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiA+sQ53//2F7ijbvKdD
BLfOpSNJNhbRE4zUG7kmJcke8wIgFgYCAIyoVcc82goz7HkzzJtrC/2dNaNReF5+
rarts/k=
-----END CERTIFICATE-----`,
	},
	{
		name: "RSA with SHA-256", alg: x509.SHA256WithRSA,
		endPoint: "22408e9fb470a279c0214d596a78c4569be3490fca6a753e016b758f4e0138be",
		x5t:      "IkCOn7RwonnAIU1ZanjEVpvjSQ_KanU-AWt1j04BOL4",
		pem: `-----BEGIN CERTIFICATE-----
MIIDCjCCAfKgAwIBAgIBBTANBgkqhkiG9w0BAQsFADAdMRswGQYDVQQDDBJyc2Et
c2hhMjU2LmV4YW1wbGUwIBcNMjYxMjA2MjE0MjExWhgPMjEyNjExMTIyMTQyMTFa
MB0xGzAZBgNVBAMMEnJzYS1zaGEyNTYuZXhhbXBsZTCCASIwDQYJKoZIhvcNAQEB
BQADggEPADCCAQoCggEBAJWQFtGi9B8HYGQWJF5yQrFWj6WBZOTZGObjpJwW5LMg
qTOJ9Z0jJUJ30mN370gQLzdapbXE7mOvCz2SGO9DZN1RaI2EPa6jyXRw5cMCkO1y
Ar+79dgPeY2ptWbPZQKlufbak+CVrLvnUpwRr7unOGYfToJsT5MdoEGMcaKP4uQp
Io6AcaKayo50M/GAv7GbaGybh8NjpWTgYkjuAE0tKtP0wIADoFV5xJZBrzfg3VNo
NMEc3/GB8iFUmbrBx2Y3m2ko6EeDKhI7OFU00ldsP1m3WJbOC0oMHEId2wtW+Zla
8Aqxj+qvYwPEbfXtXWXXHFvCPai/aX7QnjRoOMqh8rECAwEAAaNTMFEwHQYDVR0O
BBYEFGJHb1qcQ37x7eLnuE2DDoYZe4PKMB8GA1UdIwQYMBaAFGJHb1qcQ37x7eLn
uE2DDoYZe4PKMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBAIy7
hmxeQoBIezvC0fGCqHlqiOfBgbTR/L7NW80aaIVyi6wqwXXE2zCHxsVmMPBKKWb5
RWpg3DqN+f3MGJNXhAQVHCRodGapg9lxQL5Cj87eJ54v1zSSVnl+ZGsVMpolEoD1
vyuNTsycZ+aABUXFSBMCFfiWiImJec5u09yEB0omw42iDw3JwSrx8YUxn1Z0N17a
4AwOoEylKYQfnGZZj9L2hJnu2eglU236n8q4lTPGtmcbA4WjtUzrCyrrMyfQGvJe
mht75V7T5hG417z4k8rMQJx5GeFlnbxs/2B3fU8Hjq/2Yc4UTSQn1f0ewq9nyHhr
UMaSERLdu9GL8ZP03gk=
-----END CERTIFICATE-----`,
	},
	{
		name: "ECDSA with SHA-384", alg: x509.ECDSAWithSHA384,
		endPoint: "d14220855f6ebb07f167bd1d683b059139e002e44405c21189e8cb112fe29f53d4016def688aba86b068fd5be304a82d",
		x5t:      "Z4k4n-HtryFNdRsL8o_fxpuGAYggRU8yeaJhSd_wZwk",
		pem: `-----BEGIN CERTIFICATE-----
MIIBgzCCASigAwIBAgIBAzAKBggqhkjOPQQDAzAfMR0wGwYDVQQDDBRlY2RzYS1z
aGEzODQuZXhhbXBsZTAgFw0yNjEyMDYyMTQyMTBaGA8yMTI2MTExMjIxNDIxMFow
HzEdMBsGA1UEAwwUZWNkc2Etc2hhMzg0LmV4YW1wbGUwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAARUeVkhimgzgmS1PSRJPPMyLkr0ZmcjU+1zT2agsloenHh+7mSP
j3IYzjxZuTyILejWCsXoedkSPFqw4LJuFtwEo1MwUTAdBgNVHQ4EFgQUoF0noqao
gH7vK5SxrFnkA5rWrD0wHwYDVR0jBBgwFoAUoF0noqaogH7vK5SxrFnkA5rWrD0w
DwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAwNJADBGAiEAgKYV7kAVNQPVhJFm
woy9PqXG8VpurHi4/bFlvWflIDUCIQCkeqI+aTkNOIJABK2On2FzyfiU+2oErCX1
KSFnNlusSA==
-----END CERTIFICATE-----`,
	},
}

func parseVector(t *testing.T, name, pemText string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cert
}

func TestServerEndPointDataVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			cert := parseVector(t, v.name, v.pem)
			if cert.SignatureAlgorithm != v.alg {
				t.Fatalf("vector is signed with %v, not %v", cert.SignatureAlgorithm, v.alg)
			}
			got, err := ServerEndPointData(cert)
			if err != nil || hex.EncodeToString(got) != v.endPoint {
				t.Errorf("ServerEndPointData = %x, %v; want %s", got, err, v.endPoint)
			}
			// The client's view: the certificate the server presented.
			cs := tls.ConnectionState{Version: tls.VersionTLS12, PeerCertificates: []*x509.Certificate{cert}}
			if got, err := Data(cs, "tls-server-end-point"); err != nil || hex.EncodeToString(got) != v.endPoint {
				t.Errorf("Data(tls-server-end-point) = %x, %v; want %s", got, err, v.endPoint)
			}
		})
	}
}

func TestCertThumbprintVectors(t *testing.T) {
	cases := []struct {
		name string
		der  []byte
		want string
	}{
		// SHA-256 of "" and of "abc" (FIPS 180-2's example), in base64url without padding.
		{"empty", nil, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"},
		{"abc", []byte("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"},
	}
	for _, v := range vectors {
		cases = append(cases, struct {
			name string
			der  []byte
			want string
		}{v.name, parseVector(t, v.name, v.pem).Raw, v.x5t})
	}
	for _, tc := range cases {
		if got := CertThumbprint(tc.der); got != tc.want {
			t.Errorf("%s: CertThumbprint = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// One ListenerConfig serves many connections: each handshake records, in the Served of its
// own context, the certificate it was served (here chosen by the client's name), and a
// handshake without one records nothing anywhere.
func TestListenerConfig(t *testing.T) {
	ec, other := p256(t, x509.ECDSAWithSHA256), p256(t, x509.ECDSAWithSHA384)
	cfg := ListenerConfig(&tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if h.ServerName == "other.example.com" {
			return &other, nil
		}
		return &ec, nil
	}})
	run := func(name string, s *Served) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		cc := tls.Client(a, &tls.Config{InsecureSkipVerify: true, ServerName: name})
		sc := tls.Server(b, cfg)
		errc := make(chan error, 1)
		go func() {
			ctx := context.Background()
			if s != nil {
				ctx = WithServed(ctx, s)
			}
			errc <- sc.HandshakeContext(ctx)
		}()
		if err := cc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	first, second := new(Served), new(Served)
	run("mail.example.com", first)
	run("other.example.com", second)
	run("mail.example.com", nil)
	for _, c := range []struct {
		s    *Served
		want tls.Certificate
	}{{first, ec}, {second, other}} {
		if leaf, err := c.s.Leaf(); err != nil || leaf == nil || !bytes.Equal(leaf.Raw, c.want.Certificate[0]) {
			t.Errorf("Leaf = %v, %v; want the certificate served on that connection", leaf, err)
		}
	}
}
