package idpmeta

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/internal/demoissuer"
)

func TestFetchFromDemoIssuer(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	iss, err := demoissuer.New(srv.URL, map[string]string{"alice": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", iss.Handler())
	ctx := context.Background()

	m, err := Fetch(ctx, srv.Client(), DiscoveryURL(srv.URL+"/"), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if m.JWKSURI == "" || m.TokenEndpoint == "" {
		t.Errorf("metadata %+v lacks jwks_uri or token_endpoint", m)
	}
	keys, err := FetchKeys(ctx, srv.Client(), m.JWKSURI)
	if err != nil || len(keys) != 1 || keys[0].KeyID != iss.KeyID() {
		t.Errorf("keys %v, %v; want the issuer's one key %s", keys, err, iss.KeyID())
	}

	if _, err := Fetch(ctx, srv.Client(), DiscoveryURL(srv.URL), "https://other.example.com"); err == nil || !strings.Contains(err.Error(), "names issuer") {
		t.Errorf("issuer mismatch: err %v", err)
	}
	if _, err := FetchKeys(ctx, srv.Client(), srv.URL+"/nowhere"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing JWK Set: err %v", err)
	}
}

func TestFetchKeysSkipsEncryptionAndPrivateKeys(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","use":"sig"},{"kty":"EC","crv":"P-256","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`))
	}))
	defer srv.Close()
	if _, err := FetchKeys(context.Background(), srv.Client(), srv.URL); err == nil || !strings.Contains(err.Error(), "2 keys skipped") {
		t.Errorf("err %v, want no usable key", err)
	}
}
