package oauthlogin

import (
	"strings"
	"testing"
	"time"
)

// registrationSeeds are the responses of RFC 7591 §3.2.1 and §3.2.2, RFC 7592 §3's, and
// what oidc-provider answers.
var registrationSeeds = []string{
	`{"client_id":"s6BhdRkqt3","client_secret":"cf136dc3c1fc93f31185e5885805d","client_id_issued_at":2893256800,"client_secret_expires_at":2893276800,"redirect_uris":["https://client.example.org/callback","https://client.example.org/callback2"],"grant_types":["authorization_code","refresh_token"],"client_name":"My Example Client","client_name#ja-Jpan-JP":"\u30AF\u30E9\u30A4\u30A2\u30F3\u30C8\u540D","token_endpoint_auth_method":"client_secret_basic","logo_uri":"https://client.example.org/logo.png","jwks_uri":"https://client.example.org/my_public_keys.jwks","example_extension_parameter":"example_value"}`,
	`{"registration_access_token":"reg-23410913-abewfq.123483","registration_client_uri":"https://server.example.com/register/s6BhdRkqt3","client_id":"s6BhdRkqt3","client_secret":"cf136dc3c1fc93f31185e5885805d","client_id_issued_at":2893256800,"client_secret_expires_at":2893276800}`,
	`{"error":"invalid_redirect_uri","error_description":"The redirection URI http://sketchy.example.com is not allowed by this server."}`,
	`{"error":"invalid_client_metadata","error_description":"The grant type 'authorization_code' must be registered along with the response type 'code' but found only 'implicit' instead."}`,
	`{"application_type":"native","grant_types":["authorization_code","refresh_token"],"id_token_signed_response_alg":"RS256","require_auth_time":false,"response_types":["code"],"subject_type":"public","token_endpoint_auth_method":"none","client_id":"Yx2iV3l1aVJn","client_id_issued_at":1750000000,"client_name":"saslgate login","redirect_uris":["http://127.0.0.1/callback","http://127.0.0.1:40123/callback"],"registration_client_uri":"http://127.0.0.1:9999/reg/Yx2iV3l1aVJn","registration_access_token":"abc"}`,
	`{"client_id":"a\u0000b"}`, `{"client_id":""}`, `[]`, ``,
}

func FuzzParseRegistration(f *testing.F) {
	for _, s := range registrationSeeds {
		f.Add([]byte(s), 400, "40123")
	}
	f.Fuzz(func(t *testing.T, body []byte, status int, port string) {
		if r, err := ParseRegistration(body, "https://issuer.example"); err == nil {
			if r.ClientID == "" || !visible(r.ClientID) || !visible(r.ClientSecret) || r.Issuer != "https://issuer.example" {
				t.Fatalf("accepted %+v", r)
			}
			if path, ok := r.redirectURI(port); ok && !strings.HasPrefix(path, "/") && path != "" {
				t.Fatalf("redirect path %q", path)
			}
			_ = r.expired(time.Unix(2893276800, 0))
			_ = r.registeredPort()
		}
		if msg := registrationError(status, body).Error(); strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("error message with control characters: %q", msg)
		}
	})
}

func TestParseRegistration(t *testing.T) {
	r, err := ParseRegistration([]byte(registrationSeeds[0]), "https://server.example.com")
	if err != nil || r.ClientID != "s6BhdRkqt3" || r.TokenEndpointAuthMethod != "client_secret_basic" || !r.grants(grantRefreshToken) || r.grants(grantDeviceCode) {
		t.Fatalf("RFC 7591 example: %+v, %v", r, err)
	}
	if r.expired(time.Unix(2893276799, 0)) || !r.expired(time.Unix(2893276800, 0)) {
		t.Error("client_secret_expires_at not honoured")
	}
	if _, ok := r.redirectURI("8080"); ok {
		t.Error("a web redirect URI taken for the loopback one")
	}
	r, err = ParseRegistration([]byte(registrationSeeds[4]), "http://127.0.0.1:9999")
	if err != nil || r.registeredPort() != "40123" {
		t.Fatalf("oidc-provider answer: %+v, %v", r, err)
	}
	if p, ok := r.redirectURI("40123"); !ok || p != "/callback" {
		t.Errorf("redirect path for the registered port: %q, %v", p, ok)
	}
	if p, ok := r.redirectURI("5555"); !ok || p != "/callback" {
		t.Errorf("redirect path for another port (RFC 8252 §7.3): %q, %v", p, ok)
	}
	for _, bad := range registrationSeeds[5:] {
		if _, err := ParseRegistration([]byte(bad), "x"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if e := registrationError(400, []byte(registrationSeeds[2])); e.Code != "invalid_redirect_uri" || !strings.Contains(e.Error(), "sketchy") {
		t.Errorf("error %+v", e)
	}
}
