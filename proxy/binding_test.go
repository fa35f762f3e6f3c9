package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/binding"
	"github.com/saslgate/saslgate/tls/certs"
)

// tlsPair is one handshaken connection seen from both ends.
type tlsPair struct {
	client tls.ConnectionState
	server Conn
}

// dialTLS handshakes over net.Pipe with a server asking for client certificates as l
// says; clientCert may be nil.
func dialTLS(t *testing.T, l ListenerConfig, serverCert tls.Certificate, clientCert *tls.Certificate, version uint16) tlsPair {
	t.Helper()
	base, err := l.ServerTLS(certs.FromCertificate(serverCert).TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg, served := binding.ServerConfig(base)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ccfg := &tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version}
	if clientCert != nil {
		ccfg.Certificates = []tls.Certificate{*clientCert}
	}
	cc, sc := tls.Client(a, ccfg), tls.Server(b, cfg)
	errc := make(chan error, 1)
	go func() { errc <- sc.Handshake() }()
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	st := sc.ConnectionState()
	return tlsPair{client: cc.ConnectionState(), server: Conn{TLS: &st, Served: served}}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	c, _, err := certs.SelfSigned("mail.example.com")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func cbData(t *testing.T, cs tls.ConnectionState, typ string) []byte {
	t.Helper()
	d, err := binding.Data(cs, typ)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantStatus(t *testing.T, err error, status string) {
	t.Helper()
	var f *sasl.Failure
	switch {
	case status == "" && err != nil:
		t.Fatalf("got %v, want success", err)
	case status != "" && (!errors.As(err, &f) || f.Status != status):
		t.Fatalf("got %v, want Failure %s", err, status)
	}
}

var anyToken = validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
	thumb, _ := strings.CutPrefix(r.Token, "bound:")
	if thumb == r.Token {
		thumb = ""
	}
	return introspect.Identity{User: "alice@example.com", CertThumbprint: thumb}, nil
})

// bindCase is one channel-binding attempt and its outcome by policy.
type bindCase struct {
	name   string
	creds  sasl.Credentials
	status map[string]string // RFC 7628 status by policy; absent means success
}

// refused is the outcome of a binding that is wrong under every policy.
var refused = map[string]string{"": "invalid_request", ChannelBindingOff: "invalid_request", ChannelBindingOptional: "invalid_request", ChannelBindingRequired: "invalid_request"}

func TestChannelBinding(t *testing.T) {
	srv := selfSigned(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			for _, policy := range []string{"", ChannelBindingOff, ChannelBindingOptional, ChannelBindingRequired} {
				l := ListenerConfig{Name: "imaps", ChannelBinding: policy}
				this, other := dialTLS(t, l, srv, nil, v), dialTLS(t, l, srv, nil, v)
				cases := []bindCase{
					{"n", sasl.Credentials{CBFlag: 'n'}, map[string]string{ChannelBindingRequired: "invalid_request"}},
					{"y", sasl.Credentials{CBFlag: 'y'}, map[string]string{ChannelBindingRequired: "invalid_request"}},
					{"p=tls-server-end-point, this connection", sasl.Credentials{CBFlag: 'p', CBType: binding.TLSServerEndPoint, CBData: cbData(t, this.client, binding.TLSServerEndPoint)},
						map[string]string{"": "invalid_request", ChannelBindingOff: "invalid_request"}},
					{"p=tls-server-end-point, wrong data", sasl.Credentials{CBFlag: 'p', CBType: binding.TLSServerEndPoint, CBData: []byte("0123456789abcdef0123456789abcdef")},
						refused},
					{"p=tls-unique", sasl.Credentials{CBFlag: 'p', CBType: "tls-unique", CBData: []byte{1}},
						refused},
					{"p= without cbdata", sasl.Credentials{CBFlag: 'p', CBType: binding.TLSServerEndPoint},
						refused},
				}
				if v == tls.VersionTLS13 {
					ok := map[string]string{"": "invalid_request", ChannelBindingOff: "invalid_request"}
					cases = append(cases,
						bindCase{"p=tls-exporter, this connection", sasl.Credentials{CBFlag: 'p', CBType: binding.TLSExporter, CBData: cbData(t, this.client, binding.TLSExporter)}, ok},
						bindCase{"p=tls-exporter, relayed from another connection", sasl.Credentials{CBFlag: 'p', CBType: binding.TLSExporter, CBData: cbData(t, other.client, binding.TLSExporter)},
							refused})
				} else {
					cases = append(cases, bindCase{"p=tls-exporter on TLS 1.2", sasl.Credentials{CBFlag: 'p', CBType: binding.TLSExporter, CBData: make([]byte, 32)},
						refused})
				}
				for _, tc := range cases {
					t.Run("policy="+policy+"/"+tc.name, func(t *testing.T) {
						tc.creds.Token = "unbound"
						_, err := Authorize(context.Background(), anyToken, l, this.server, "imap", tc.creds)
						wantStatus(t, err, tc.status[policy])
					})
				}
			}
		})
	}
}

func TestChannelBindingWithoutTLS(t *testing.T) {
	l := ListenerConfig{Name: "imap", ChannelBinding: ChannelBindingOptional}
	_, err := Authorize(context.Background(), anyToken, l, Conn{}, "imap", sasl.Credentials{Token: "t", CBFlag: 'p', CBType: binding.TLSExporter, CBData: make([]byte, 32)})
	wantStatus(t, err, "invalid_request")
}

func TestBoundTokens(t *testing.T) {
	srv, alice, mallory := selfSigned(t), selfSigned(t), selfSigned(t)
	bound := "bound:" + binding.CertThumbprint(alice.Certificate[0])
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, require := range []bool{false, true} {
			l := ListenerConfig{Name: "imaps", ClientCertificates: ClientCertRequest, RequireBoundTokens: require}
			withAlice, withMallory, without := dialTLS(t, l, srv, &alice, v), dialTLS(t, l, srv, &mallory, v), dialTLS(t, l, srv, nil, v)
			unboundStatus := ""
			if require {
				unboundStatus = "invalid_token"
			}
			cases := []struct {
				name, token string
				conn        Conn
				status      string
			}{
				{"bound token, its certificate", bound, withAlice.server, ""},
				{"bound token, another certificate", bound, withMallory.server, "invalid_token"},
				{"bound token, no certificate", bound, without.server, "invalid_token"},
				{"bound token, no TLS", bound, Conn{}, "invalid_token"},
				{"unbound token with a certificate", "unbound", withAlice.server, unboundStatus},
				{"unbound token without", "unbound", without.server, unboundStatus},
			}
			for _, tc := range cases {
				name := tls.VersionName(v) + "/" + tc.name
				if require {
					name += "/require_bound_tokens"
				}
				t.Run(name, func(t *testing.T) {
					_, err := Authorize(context.Background(), anyToken, l, tc.conn, "imap", sasl.Credentials{Token: tc.token, CBFlag: 'n'})
					wantStatus(t, err, tc.status)
				})
			}
		}
	}
}

func TestServerTLS(t *testing.T) {
	base := &tls.Config{}
	for mode, want := range map[string]tls.ClientAuthType{"": tls.NoClientCert, ClientCertNone: tls.NoClientCert, ClientCertRequest: tls.RequestClientCert} {
		cfg, err := ListenerConfig{ClientCertificates: mode}.ServerTLS(base)
		if err != nil || cfg.ClientAuth != want {
			t.Errorf("%q: %v, %v; want %v", mode, cfg.ClientAuth, err, want)
		}
	}
	_, pem, _ := certs.SelfSigned("ca")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ListenerConfig{ClientCertificates: ClientCertVerify, ClientCAFile: ca}.ServerTLS(base)
	if err != nil || cfg.ClientAuth != tls.VerifyClientCertIfGiven || cfg.ClientCAs == nil {
		t.Errorf("verify: %v, %v", cfg, err)
	}
	if _, err := (ListenerConfig{ClientCertificates: ClientCertVerify, ClientCAFile: filepath.Join(t.TempDir(), "none")}).ServerTLS(base); err == nil {
		t.Error("missing client_ca_file accepted")
	}
	if base.ClientAuth != tls.NoClientCert {
		t.Error("ServerTLS changed its argument")
	}
}

func TestListenerValidateBinding(t *testing.T) {
	base := ListenerConfig{Name: "imaps", Protocol: "imap", Address: ":993", TLS: TLSImplicit}
	good := []ListenerConfig{base, base, base}
	good[1].ClientCertificates, good[1].RequireBoundTokens, good[1].ChannelBinding = ClientCertRequest, true, ChannelBindingRequired
	good[2].ClientCertificates, good[2].ClientCAFile, good[2].ChannelBinding = ClientCertVerify, "/etc/ca.pem", ChannelBindingOptional
	for i, l := range good {
		if err := l.Validate("listeners[0]"); err != nil {
			t.Errorf("good[%d]: %v", i, err)
		}
	}
	bad := []struct {
		mod   func(*ListenerConfig)
		field string
	}{
		{func(l *ListenerConfig) { l.ClientCertificates = "optional" }, "listeners[0].client_certificates"},
		{func(l *ListenerConfig) { l.ClientCertificates = ClientCertVerify }, "listeners[0].client_ca_file"},
		{func(l *ListenerConfig) { l.ClientCAFile = "/etc/ca.pem" }, "listeners[0].client_ca_file"},
		{func(l *ListenerConfig) { l.RequireBoundTokens = true }, "listeners[0].require_bound_tokens"},
		{func(l *ListenerConfig) { l.ChannelBinding = "on" }, "listeners[0].channel_binding"},
	}
	for _, tc := range bad {
		l := base
		tc.mod(&l)
		if err := l.Validate("listeners[0]"); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: error %v does not name %s", l, err, tc.field)
		}
	}
}
