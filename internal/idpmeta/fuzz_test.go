package idpmeta

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bodyTransport answers every request with 200 and one body, so Fetch parses what the fuzzer
// made without a network round trip.
type bodyTransport []byte

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(string(b))), Request: r}, nil
}

// FuzzFetch feeds Fetch issuer metadata documents, as an identity provider (or whoever
// answers in its place) may serve them to the gateway's discovery listener and to `saslgate
// check` and `login`. Seeds: RFC 8414 §3.2's example response, OpenID Connect Discovery 1.0
// §4.2's, and the shapes a mail issuer following draft-ietf-mailmaint-oauth-public publishes.
func FuzzFetch(f *testing.F) {
	const issuer = "https://server.example.com"
	for _, seed := range []string{
		// RFC 8414 §3.2
		`{"issuer":"https://server.example.com","authorization_endpoint":"https://server.example.com/authorize",` +
			`"token_endpoint":"https://server.example.com/token","token_endpoint_auth_methods_supported":["client_secret_basic","private_key_jwt"],` +
			`"token_endpoint_auth_signing_alg_values_supported":["RS256","ES256"],"userinfo_endpoint":"https://server.example.com/userinfo",` +
			`"jwks_uri":"https://server.example.com/jwks.json","registration_endpoint":"https://server.example.com/register",` +
			`"scopes_supported":["openid","profile","email","address","phone","offline_access"],"response_types_supported":["code","code token"],` +
			`"service_documentation":"http://server.example.com/service_documentation.html","ui_locales_supported":["en-US","en-GB","en-CA","fr-FR","fr-CA"]}`,
		// OpenID Connect Discovery 1.0 §4.2 (abridged)
		`{"issuer":"https://server.example.com","authorization_endpoint":"https://server.example.com/connect/authorize",` +
			`"token_endpoint":"https://server.example.com/connect/token","token_endpoint_auth_methods_supported":["client_secret_basic","private_key_jwt"],` +
			`"userinfo_endpoint":"https://server.example.com/connect/userinfo","check_session_iframe":"https://server.example.com/connect/check_session",` +
			`"end_session_endpoint":"https://server.example.com/connect/end_session","jwks_uri":"https://server.example.com/jwks.json",` +
			`"registration_endpoint":"https://server.example.com/connect/register","scopes_supported":["openid","profile","email","address","phone","offline_access"],` +
			`"response_types_supported":["code","code id_token","id_token","token id_token"],"claims_parameter_supported":true,"request_parameter_supported":true}`,
		// An open mail issuer: registration, PKCE, RFC 9207, RFC 9728 §4, the drafts' scope.
		`{"issuer":"https://server.example.com","authorization_endpoint":"https://server.example.com/auth","token_endpoint":"https://server.example.com/token",` +
			`"registration_endpoint":"https://server.example.com/reg","code_challenge_methods_supported":["S256"],"token_endpoint_auth_methods_supported":["none"],` +
			`"grant_types_supported":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:device_code"],` +
			`"device_authorization_endpoint":"https://server.example.com/device","authorization_response_iss_parameter_supported":true,` +
			`"protected_resources":["https://mail.example.com"],"scopes_supported":["urn:ietf:params:oauth:scope:mail","offline_access"]}`,
		`{"issuer":"https://server.example.com/"}`,
		`{"issuer":"https://attacker.example"}`,
		`{"issuer":["https://server.example.com"]}`,
		`{"issuer":"https://server.example.com","scopes_supported":"openid"}`,
		`[]`, `null`, `{`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c := &http.Client{Transport: bodyTransport(doc)}
		m, err := Fetch(context.Background(), c, issuer+"/.well-known/oauth-authorization-server", issuer)
		if err != nil {
			if m != nil {
				t.Fatalf("metadata %+v with error %v", m, err)
			}
			if !strings.HasPrefix(err.Error(), "idpmeta: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			return
		}
		// RFC 8414 §3.3: metadata naming another issuer must not be used.
		if m == nil || m.Issuer != issuer {
			t.Fatalf("accepted metadata %+v for issuer %q", m, issuer)
		}
	})
}
