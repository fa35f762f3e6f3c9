package discovery

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
)

// FuzzHandler sends the discovery listener what any client on the Internet may: any path,
// query (the emailaddress and WebFinger resource parameters) and Host (which picks an RFC 9728
// document). Every answer is a known status, and a 200 is a well-formed document.
func FuzzHandler(f *testing.F) {
	h, err := New(Config{Address: ":443", Domains: []string{"example.com", "example.org"}, Resource: "https://mail.example.com/all"},
		[]proxy.ListenerConfig{{Protocol: "imap", Address: ":993", TLS: proxy.TLSImplicit, PublicHost: "mail.example.com"}},
		protocols, []introspect.IssuerConfig{{Issuer: issuer, Resources: map[string][]string{
			"imap": {"https://imap.example.com", "https://mail.example.com"}, "smtp": {"https://smtp.example.com/submit/"}}}},
		endpoints, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][3]string{
		{AutoconfigPath, "emailaddress=alice%40example.com", "autoconfig.example.com"},
		{WellKnownAutoconfigPath, "", "example.org"},
		{AutoconfigPath, "emailaddress=%40", ""},
		{AutoconfigPath, "emailaddress=alice@example.com@example.net", "x"},
		{WebFingerPath, "resource=acct%3Aalice%40example.com&rel=http%3A%2F%2Fopenid.net%2Fspecs%2Fconnect%2F1.0%2Fissuer", "example.com"},
		{WebFingerPath, "resource=acct:%ZZ", "example.com"},
		{ProtectedResourcePath, "", "imap.example.com"},
		{ProtectedResourcePath, "", "MAIL.example.com.:443"},
		{ProtectedResourcePath + "/submit", "", "smtp.example.com"},
		{ProtectedResourcePath + "/all", "", "[::1]:443"},
		{ProtectedResourcePath + "/%2e%2e/", "", "example.com"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, path, query, host string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(http.MethodGet, "http://x"+path+"?"+query, nil)
		if err != nil {
			return // not a request line a server would have parsed
		}
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		body, _ := io.ReadAll(res.Body)
		switch res.StatusCode {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			return
		default:
			t.Fatalf("GET %s?%s (Host %q): %s", path, query, host, res.Status)
		}
		switch ct := res.Header.Get("Content-Type"); {
		case strings.HasPrefix(ct, "application/xml"):
			var doc autoconfigDoc
			if err := xml.Unmarshal(body, &doc); err != nil {
				t.Fatalf("autoconfig is not XML: %v\n%s", err, body)
			}
		case ct == "application/json" || ct == "application/jrd+json":
			if !json.Valid(body) {
				t.Fatalf("%s is not JSON:\n%s", ct, body)
			}
		default:
			t.Fatalf("200 with Content-Type %q", ct)
		}
	})
}
