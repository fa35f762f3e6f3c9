package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// The public client and resource configured in idp/server.js.
const (
	idpClientID    = "saslgate-e2e"
	idpRedirectURI = "http://127.0.0.1/cb"
	idpResource    = "urn:saslgate"
	idpAudience    = "saslgate"
)

// idp is one running oidc-provider (idp/server.js).
type idp struct {
	issuer string
	proc   *proc
}

// startIdP starts idp/server.js on a free port and waits for its "READY <issuer>" line.
func startIdP(dir, name string) (*idp, error) {
	var issuer string
	p, err := startProc(name, filepath.Join(dir, name+".log"), nil, func(line string) bool {
		if s, ok := strings.CutPrefix(line, "READY "); ok {
			issuer = s
			return true
		}
		return false
	}, 20*time.Second, "node", filepath.Join(idpDir(), "server.js"), "0")
	if err != nil {
		return &idp{proc: p}, err
	}
	return &idp{issuer: issuer, proc: p}, nil
}

// mintRequest is the body of idp/server.js's test-only POST /test/mint. The token is
// created with the provider's own AccessToken model and signed with its real key.
type mintRequest struct {
	Sub    string         `json:"sub,omitempty"`
	Claims map[string]any `json:"claims,omitempty"`
	Aud    string         `json:"aud,omitempty"`
	Scope  string         `json:"scope,omitempty"`
	TTL    int            `json:"ttl,omitempty"` // seconds
	Age    int            `json:"age,omitempty"` // seconds iat lies in the past
}

func (i *idp) mint(r mintRequest) (string, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	resp, err := http.Post(i.issuer+"/test/mint", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("mint: %s: %s", resp.Status, b)
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("mint: bad response %q: %v", b, err)
	}
	return out.AccessToken, nil
}

// jwks fetches the provider's published key set (via discovery, like the proxy does).
func (i *idp) jwks() ([]byte, error) {
	var disc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(i.issuer+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, err
	}
	resp, err := http.Get(disc.JWKSURI)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

var formAction = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)

// authorizationCodeToken runs a real OAuth 2.0 authorization code grant with PKCE
// (RFC 6749 §4.1, RFC 7636 S256) against oidc-provider, the way a mail client's
// browser flow would: GET /auth, log in and consent through oidc-provider's
// devInteractions forms (any password is accepted there), catch the redirect to the
// client's loopback redirect URI, and redeem the code at the token endpoint with the
// resource indicator (RFC 8707) that selects the JWT access token for saslgate.
func (i *idp) authorizationCodeToken(login string) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	var code, state string
	client := &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host == "127.0.0.1" && req.URL.Path == "/cb" {
				code, state = req.URL.Query().Get("code"), req.URL.Query().Get("state")
				if e := req.URL.Query().Get("error"); e != "" {
					return fmt.Errorf("authorization error %s: %s", e, req.URL.Query().Get("error_description"))
				}
				return http.ErrUseLastResponse
			}
			if len(via) > 20 {
				return fmt.Errorf("too many redirects")
			}
			return nil
		},
	}
	verifier := randomB64(32)
	sum := sha256.Sum256([]byte(verifier))
	wantState := randomB64(12)
	q := url.Values{
		"client_id":             {idpClientID},
		"response_type":         {"code"},
		"redirect_uri":          {idpRedirectURI},
		"scope":                 {"openid email imap smtp"},
		"resource":              {idpResource},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"state":                 {wantState},
	}
	page, err := fetchPage(client, http.MethodGet, i.issuer+"/auth?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	// Login, then consent: each is a form posted back to /interaction/<uid>.
	for _, form := range []url.Values{
		{"prompt": {"login"}, "login": {login}, "password": {"any"}},
		{"prompt": {"consent"}},
	} {
		m := formAction.FindStringSubmatch(page)
		if m == nil {
			return "", fmt.Errorf("no form on interaction page (prompt %s): %.500s", form.Get("prompt"), page)
		}
		action, err := url.Parse(html.UnescapeString(m[1]))
		if err != nil {
			return "", err
		}
		base, _ := url.Parse(i.issuer)
		page, err = fetchPage(client, http.MethodPost, base.ResolveReference(action).String(), form)
		if err != nil {
			return "", err
		}
		if code != "" {
			break // consent was remembered; the code came right after login
		}
	}
	if code == "" {
		return "", fmt.Errorf("no authorization code after consent: %.500s", page)
	}
	if state != wantState {
		return "", fmt.Errorf("state %q, want %q", state, wantState)
	}
	resp, err := client.PostForm(i.issuer+"/token", url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {idpRedirectURI},
		"code_verifier": {verifier},
		"client_id":     {idpClientID},
		"resource":      {idpResource},
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tok) != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("token endpoint: %s: %s", resp.Status, b)
	}
	return tok.AccessToken, nil
}

func fetchPage(c *http.Client, method, u string, form url.Values) (string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		return "", fmt.Errorf("%s %s: %s: %.500s", method, u, resp.Status, b)
	}
	return string(b), nil
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// jwtParts decodes a compact JWS's header and payload (no verification).
func jwtParts(token string) (header, payload map[string]any, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("not a compact JWS: %d parts", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, dst); err != nil {
			return nil, nil, err
		}
	}
	return header, payload, nil
}
