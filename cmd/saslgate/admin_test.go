package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/internal/metrics"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	proxyimap "github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/proxy/sasl"
	proxysmtp "github.com/saslgate/saslgate/proxy/smtp"
	"github.com/saslgate/saslgate/tls/certs"
)

// adminEnv is a demo issuer and an in-memory IMAP backend for alice, and a configuration
// with one IMAP listener and the admin listener, all on loopback.
func adminEnv(t *testing.T) (*fileConfig, *demoissuer.Issuer) {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + hs.Listener.Addr().String()
	iss, err := demoissuer.New(issuerURL, map[string]string{"alice": "alice"}, demoissuer.WithAudience("saslgate"))
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = iss.Handler()
	hs.Start()
	t.Cleanup(hs.Close)

	keyFile := filepath.Join(t.TempDir(), "hmac.key")
	key, err := backends.NewHMACKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice", backends.DeriveSecret(key, "alice").Reveal())
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: true,
		Logger:       slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	})
	go backend.Serve(bln)
	t.Cleanup(func() { backend.Close() })

	cfg := &fileConfig{
		Listeners: []proxy.ListenerConfig{{Name: "imaps", Protocol: "imap", Address: "127.0.0.1:0", TLS: proxy.TLSImplicit}},
		Secrets:   backends.SecretsConfig{Source: "hmac", HMACKeyFile: keyFile},
		Tokens: introspect.Config{Issuers: []introspect.IssuerConfig{{
			Issuer: issuerURL, Mode: "jwt", Audience: []string{"saslgate"}, UsernameClaim: "sub",
		}}},
		Admin: metrics.AdminConfig{Address: "127.0.0.1:0"},
		Sections: map[string]proxy.Section{
			"imap": &proxyimap.Config{Backend: backends.Config{Address: bln.Addr().String(), TLS: "none"}},
		},
	}
	return cfg, iss
}

func startTestGateway(t *testing.T, cfg *fileConfig) *gateway {
	t.Helper()
	cert, _, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	g, err := startGateway(context.Background(), cfg, certs.FromCertificate(cert), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return g
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// counter is the value of the one series of family name with all of labels.
func counter(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var sum float64
series:
	for _, m := range families[name].GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || lp.GetName() == k && lp.GetValue() == v
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// The admin listener of a running gateway: liveness, readiness, and metrics that move with
// a login.
func TestAdminListener(t *testing.T) {
	cfg, iss := adminEnv(t)
	g := startTestGateway(t, cfg)
	admin := "http://" + g.addrs["admin"].String()

	if code, body := httpGet(t, admin+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	// Ready loads the issuer's keys: the first probe already passes.
	if code, body := httpGet(t, admin+"/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}

	tok, err := iss.Mint(demoissuer.Claims{Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := tls.Dial("tcp", g.addrs["imaps"].String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	readLine := func(prefix string) {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, prefix) {
			t.Fatalf("got %q, %v; want %q", line, err, prefix)
		}
	}
	readLine("* OK ")
	io.WriteString(nc, "a AUTHENTICATE XOAUTH2 "+base64.StdEncoding.EncodeToString(sasl.EncodeXOAuth2("alice", tok))+"\r\n")
	readLine("a OK ")

	code, body := httpGet(t, admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{metrics.NameConnectionsAccepted, map[string]string{"listener": "imaps", "protocol": "imap"}, 1},
		{metrics.NameAuth, map[string]string{"listener": "imaps", "mechanism": "XOAUTH2", "result": "success"}, 1},
		{metrics.NameTokenValidation, map[string]string{"mode": "jwt", "cache": "miss"}, 1},
		{metrics.NameIdPRequests, map[string]string{"issuer": cfg.Tokens.Issuers[0].Issuer, "kind": "jwks"}, 1},
		{metrics.NameIdPRequests, map[string]string{"kind": "discovery"}, 1},
		{metrics.NameIdPRequestErrors, nil, 0},
		{metrics.NameBackendLogin, map[string]string{"protocol": "imap"}, 1},
	} {
		if got := counter(families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if families["go_goroutines"] == nil || families["process_open_fds"] == nil {
		t.Error("/metrics lacks the Go and process collectors")
	}
}

// /readyz names what is not ready: here, an SMTP backend nobody listens on.
func TestAdminNotReady(t *testing.T) {
	cfg, _ := adminEnv(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	cfg.Listeners = append(cfg.Listeners, proxy.ListenerConfig{Name: "smtps", Protocol: "smtp", Address: "127.0.0.1:0", TLS: proxy.TLSImplicit})
	cfg.Sections["smtp"] = &proxysmtp.Config{Backend: backends.Config{Address: deadAddr, TLS: "none", Hostname: "gw.example"}}
	g := startTestGateway(t, cfg)

	code, body := httpGet(t, "http://"+g.addrs["admin"].String()+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "smtp pool backend member "+deadAddr+": ") || strings.Count(body, "\n") != 1 {
		t.Errorf("/readyz = %d %q; want 503 naming only the SMTP backend", code, body)
	}
}

// Without an admin section nothing listens and nothing is collected.
func TestNoAdminListener(t *testing.T) {
	cfg, _ := adminEnv(t)
	cfg.Admin = metrics.AdminConfig{}
	g := startTestGateway(t, cfg)
	if g.admin != nil || g.addrs["admin"] != nil {
		t.Error("admin listener started without an admin section")
	}
}

// The example enables the admin listener on loopback; a bad address is named.
func TestAdminConfigLoads(t *testing.T) {
	b, err := os.ReadFile("../../examples/saslgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(writeConfig(t, string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Address != "127.0.0.1:9100" {
		t.Errorf("admin.address = %q", cfg.Admin.Address)
	}
	bad := strings.Replace(string(b), "address: 127.0.0.1:9100", "address: 9100", 1)
	if _, err := loadConfig(writeConfig(t, bad)); err == nil || !strings.Contains(err.Error(), "admin.address") {
		t.Errorf("bad admin address: %v", err)
	}
}
