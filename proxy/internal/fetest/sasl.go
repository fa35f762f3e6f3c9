package fetest

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/binding"
)

// B64 is s in standard base64.
func B64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// OAuthBearer is an OAUTHBEARER initial response (RFC 7628 §3.1), base64-encoded, for host
// 127.0.0.1 and port, without channel binding.
func OAuthBearer(user, token string, port int) string {
	return B64(string(sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: user, Host: "127.0.0.1", Port: port, Token: token, CBFlag: 'n'})))
}

// BoundOAuthBearer is an OAUTHBEARER initial response, base64-encoded, bound (RFC 5801's
// "p=" flag) to the channel binding data of type cbType that st gives.
func BoundOAuthBearer(t testing.TB, st tls.ConnectionState, cbType, user, token string) string {
	t.Helper()
	data, err := binding.Data(st, cbType)
	if err != nil {
		t.Fatal(err)
	}
	return B64(string(sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: user, Token: token, CBFlag: 'p', CBType: cbType, CBData: data})))
}

// XOAuth2 is an XOAUTH2 initial response, base64-encoded.
func XOAuth2(user, token string) string { return B64(string(sasl.EncodeXOAuth2(user, token))) }

// ErrorStatus decodes the base64 JSON of an RFC 7628 error challenge, as the front end's
// framing carried it, and returns its status.
func ErrorStatus(t testing.TB, challenge string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(challenge)
	if err != nil {
		t.Fatalf("challenge %q is not base64: %v", challenge, err)
	}
	var v struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("challenge %q is not JSON: %v", raw, err)
	}
	return v.Status
}
