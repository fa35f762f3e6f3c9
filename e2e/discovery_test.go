package e2e

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// TestHTTPDiscovery runs `saslgate serve` with the http section and reads its autoconfig
// document and WebFinger answer over HTTPS, as Thunderbird and an OpenID client would.
func TestHTTPDiscovery(t *testing.T) {
	e := e2e(t)
	httpAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := e.toolsConfig(t, toolsConfigSpec{
		name:  "discovery",
		extra: fmt.Sprintf("http: {address: %q, tls: true, domains: [example.com], display_name: saslgate e2e}\n", httpAddr),
	})
	p, err := startProc("saslgate-discovery", filepath.Join(e.dir, "saslgate-discovery.log"), nil, nil, 0,
		filepath.Join(e.dir, "saslgate"), "serve", "--config", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := waitPort(ctx, httpAddr, p); err != nil {
		t.Fatalf("%v\n%s", err, tail(p.logPath, 4<<10))
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.tlsConfig()}}
	get := func(path string) []byte {
		t.Helper()
		resp, err := client.Get("https://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
		}
		return b
	}

	var doc struct {
		XMLName  xml.Name `xml:"clientConfig"`
		Provider struct {
			ID       string `xml:"id,attr"`
			Incoming []struct {
				Type     string `xml:"type,attr"`
				Hostname string `xml:"hostname"`
				Port     string `xml:"port"`
				Socket   string `xml:"socketType"`
				Auth     string `xml:"authentication"`
				Username string `xml:"username"`
			} `xml:"incomingServer"`
		} `xml:"emailProvider"`
		OAuth2 struct {
			Issuer   string `xml:"issuer"`
			AuthURL  string `xml:"authURL"`
			TokenURL string `xml:"tokenURL"`
		} `xml:"oAuth2"`
	}
	body := get("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=" + url.QueryEscape(mailUser))
	if err := xml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	in := doc.Provider.Incoming
	if doc.Provider.ID != "example.com" || len(in) != 2 || in[0].Hostname != "127.0.0.1" || in[0].Socket != "SSL" || in[1].Hostname != "localhost" || in[1].Socket != "STARTTLS" || in[0].Auth != "OAuth2" || in[0].Username != "%EMAILADDRESS%" {
		t.Errorf("autoconfig servers:\n%s", body)
	}
	var meta struct {
		Auth  string `json:"authorization_endpoint"`
		Token string `json:"token_endpoint"`
	}
	if err := getJSON(e.idp.issuer+"/.well-known/openid-configuration", &meta); err != nil {
		t.Fatal(err)
	}
	if doc.OAuth2.AuthURL != meta.Auth || doc.OAuth2.TokenURL != meta.Token {
		t.Errorf("autoconfig oAuth2 %+v, want the IdP's endpoints %+v", doc.OAuth2, meta)
	}

	var jrd struct {
		Subject string `json:"subject"`
		Links   []struct{ Rel, Href string }
	}
	body = get("/.well-known/webfinger?resource=" + url.QueryEscape("acct:"+mailUser) + "&rel=" + url.QueryEscape("http://openid.net/specs/connect/1.0/issuer"))
	if err := json.Unmarshal(body, &jrd); err != nil || jrd.Subject != "acct:"+mailUser || len(jrd.Links) != 1 || jrd.Links[0].Href != e.idp.issuer {
		t.Errorf("WebFinger: %v\n%s", err, body)
	}
}
