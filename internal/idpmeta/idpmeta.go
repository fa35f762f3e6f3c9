package idpmeta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// maxDocument bounds a metadata document or JWK Set.
const maxDocument = 1 << 20

// Metadata is the part of an issuer's metadata saslgate's tools use.
type Metadata struct {
	Issuer                        string   `json:"issuer"`
	JWKSURI                       string   `json:"jwks_uri"`
	AuthorizationEndpoint         string   `json:"authorization_endpoint"`
	TokenEndpoint                 string   `json:"token_endpoint"`
	DeviceAuthorizationEndpoint   string   `json:"device_authorization_endpoint"` // RFC 8628 §4
	IntrospectionEndpoint         string   `json:"introspection_endpoint"`
	UserinfoEndpoint              string   `json:"userinfo_endpoint"`
	ScopesSupported               []string `json:"scopes_supported"`
	GrantTypesSupported           []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported []string `json:"code_challenge_methods_supported"`
	RegistrationEndpoint          string   `json:"registration_endpoint"` // RFC 7591 §3, RFC 8414 §2
	// AuthorizationResponseIssParameterSupported says the issuer puts "iss" in every
	// authorization response (RFC 9207 §3): a client must then refuse one without it.
	AuthorizationResponseIssParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
}

// DiscoveryURL is where OpenID Connect Discovery 1.0 §4.1 puts the metadata of issuer.
func DiscoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}

// AuthorizationServerURL is where RFC 8414 §3.1 puts the authorization server metadata of
// issuer: the well-known path goes between the host and the issuer's path.
func AuthorizationServerURL(issuer string) string {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(issuer, "/") + "/.well-known/oauth-authorization-server"
	}
	u.Path = "/.well-known/oauth-authorization-server" + strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u.String()
}

// Fetch reads the metadata document at url and checks that it names issuer.
func Fetch(ctx context.Context, c *http.Client, url, issuer string) (*Metadata, error) {
	var m Metadata
	if err := getJSON(ctx, c, url, &m); err != nil {
		return nil, err
	}
	if m.Issuer != issuer {
		return nil, fmt.Errorf("idpmeta: %s names issuer %q, want %q", url, m.Issuer, issuer)
	}
	return &m, nil
}

// FetchKeys reads the JWK Set at url and returns its signature keys: those whose "use" is
// "sig" or absent, public, and of a type go-jose understands. A set without any is an error.
func FetchKeys(ctx context.Context, c *http.Client, url string) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := getJSON(ctx, c, url, &raw); err != nil {
		return nil, err
	}
	var keys []jose.JSONWebKey
	skipped := 0
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil || (k.Use != "" && k.Use != "sig") || !k.IsPublic() {
			skipped++
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("idpmeta: %s has no usable signature key (%d keys skipped)", url, skipped)
	}
	return keys, nil
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("idpmeta: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("idpmeta: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return fmt.Errorf("idpmeta: GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("idpmeta: GET %s: %s", url, resp.Status)
	}
	if len(body) > maxDocument {
		return errors.New("idpmeta: GET " + url + ": document too large")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("idpmeta: GET %s: %v", url, err)
	}
	return nil
}
