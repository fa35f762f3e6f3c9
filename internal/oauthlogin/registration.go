package oauthlogin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Grant types a registered client asks for (RFC 7591 §2, RFC 8628 §7.2).
const (
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	grantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// RegisteredRedirectPath is the path of the loopback redirect URIs a registered client uses.
const RegisteredRedirectPath = "/callback"

// maxRegistrationResponse bounds the registration response read.
const maxRegistrationResponse = 64 << 10

// ErrNoRegistration is wrapped when no client ID is configured and the issuer offers no
// dynamic client registration.
var ErrNoRegistration = errors.New("oauthlogin: no client ID and no dynamic client registration")

// Registration is a client registered at an issuer (RFC 7591 §3.2.1), kept beside the token
// file so that later sign-ins reuse it. It holds the registration access token (RFC 7592
// §3): the file is private like the token file.
type Registration struct {
	Issuer                  string   `json:"issuer"`
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	ClientSecretExpiresAt   int64    `json:"client_secret_expires_at,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	RedirectURIs            []string `json:"redirect_uris,omitempty"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	RegistrationAccessToken string   `json:"registration_access_token,omitempty"`
	RegistrationClientURI   string   `json:"registration_client_uri,omitempty"`
	// RegisteredAt is when this tool registered the client (not part of the response).
	RegisteredAt time.Time `json:"registered_at,omitzero"`
}

// RegistrationError is the issuer's refusal of a registration (RFC 7591 §3.2.2), or of a
// registration read (RFC 7592 §2.1).
type RegistrationError struct {
	Status      int    // the HTTP status
	Code        string // error, e.g. invalid_redirect_uri, invalid_client_metadata
	Description string // error_description
}

func (e *RegistrationError) Error() string {
	s := fmt.Sprintf("oauthlogin: the issuer refused the client registration: HTTP %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
		s += " (the issuer wants an initial access token, RFC 7591 §3: ask the site for a client ID and pass --client-id)"
	}
	return s
}

// registrationRequest is the client metadata sent (RFC 7591 §2; application_type is OpenID
// Connect Dynamic Client Registration 1.0 §2).
type registrationRequest struct {
	ApplicationType         string   `json:"application_type"`
	ClientName              string   `json:"client_name,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	SoftwareID              string   `json:"software_id,omitempty"`
}

// ParseRegistration reads a registration response (RFC 7591 §3.2.1) for issuer. It needs a
// client_id; the metadata the issuer sends back replaces what was asked for.
func ParseRegistration(body []byte, issuer string) (*Registration, error) {
	var r Registration
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("oauthlogin: registration response: %v", err)
	}
	if r.ClientID == "" || !visible(r.ClientID) || !visible(r.ClientSecret) {
		return nil, errors.New("oauthlogin: registration response: no usable client_id")
	}
	if r.RegistrationClientURI != "" {
		if u, err := url.Parse(r.RegistrationClientURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			r.RegistrationClientURI, r.RegistrationAccessToken = "", ""
		}
	}
	r.Issuer = issuer
	return &r, nil
}

// visible reports whether s has only VSCHAR (RFC 6749 Appendix A: client_id, client_secret).
func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// expired reports whether the registration's client secret has run out (RFC 7591 §3.2.1:
// 0 is never).
func (r *Registration) expired(now time.Time) bool {
	return r.ClientSecret != "" && r.ClientSecretExpiresAt > 0 && now.Unix() >= r.ClientSecretExpiresAt
}

// redirectURI returns the registered loopback redirect URI for port, if there is one: the
// URI with that port, else the one without a port (RFC 8252 §7.3: any port then).
func (r *Registration) redirectURI(port string) (path string, ok bool) {
	var portless string
	for _, ru := range r.RedirectURIs {
		u, err := url.Parse(ru)
		if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" {
			continue
		}
		if u.Port() == port {
			return u.EscapedPath(), true
		}
		if u.Port() == "" && portless == "" {
			portless = u.EscapedPath()
		}
	}
	return portless, portless != ""
}

// registeredPort is the port of a registered loopback redirect URI with one, for issuers
// that compare redirect URIs exactly.
func (r *Registration) registeredPort() string {
	for _, ru := range r.RedirectURIs {
		if u, err := url.Parse(ru); err == nil && u.Scheme == "http" && u.Hostname() == "127.0.0.1" && u.Port() != "" {
			return u.Port()
		}
	}
	return ""
}

// register registers a native public client at endpoint (RFC 7591 §3.1). port, when set,
// adds a redirect URI with the loopback listener's port beside the portless one.
func (l *Login) register(ctx context.Context, endpoint string, device bool, port string) (*Registration, error) {
	redirects := []string{"http://127.0.0.1" + RegisteredRedirectPath}
	if port != "" {
		// RFC 8252 §7.3 makes the issuer accept any port with the portless URI; this one is
		// for issuers that compare redirect URIs exactly.
		redirects = append(redirects, "http://127.0.0.1:"+port+RegisteredRedirectPath)
	}
	grants := []string{grantAuthorizationCode, grantRefreshToken}
	if device {
		grants = append(grants, grantDeviceCode)
	}
	body, err := json.Marshal(registrationRequest{
		ApplicationType: "native", ClientName: cmpStr(l.ClientName, "saslgate login"),
		RedirectURIs: redirects, TokenEndpointAuthMethod: "none", GrantTypes: grants,
		ResponseTypes: []string{"code"}, SoftwareID: "saslgate-login",
	})
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: registration endpoint: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := l.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: client registration: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRegistrationResponse))
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: client registration: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, registrationError(resp.StatusCode, b)
	}
	r, err := ParseRegistration(b, l.Issuer)
	if err != nil {
		return nil, err
	}
	if r.RedirectURIs == nil {
		r.RedirectURIs = redirects
	}
	if r.GrantTypes == nil {
		r.GrantTypes = grants
	}
	r.RegisteredAt = l.Now()
	return r, nil
}

// registrationError builds the error of a refused registration request.
func registrationError(status int, body []byte) *RegistrationError {
	e := &RegistrationError{Status: status}
	var v struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &v) == nil && visible(v.Error) && visible(v.Description) {
		e.Code, e.Description = v.Error, v.Description
	}
	return e
}

// known asks the issuer whether it still knows the registered client (RFC 7592 §2.1: a read
// with the registration access token). It reports false only on the answers that mean the
// client or its registration is gone (401, 403, 404); no answer is no verdict.
func (l *Login) known(ctx context.Context, r *Registration) bool {
	if r.RegistrationClientURI == "" || r.RegistrationAccessToken == "" {
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.RegistrationClientURI, nil)
	if err != nil {
		return true
	}
	req.Header.Set("Authorization", "Bearer "+r.RegistrationAccessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := l.HTTPClient.Do(req)
	if err != nil {
		return true
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxRegistrationResponse))
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return false
	}
	return true
}

// grants reports whether the registration allows grant type g.
func (r *Registration) grants(g string) bool { return slices.Contains(r.GrantTypes, g) }

func cmpStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// portOf returns the port of a host:port address, "" when it has none.
func portOf(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return ""
	}
	if _, err := strconv.Atoi(addr[i+1:]); err != nil {
		return ""
	}
	return addr[i+1:]
}
