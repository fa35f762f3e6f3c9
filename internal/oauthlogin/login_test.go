package oauthlogin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIssuer is a minimal authorization server: metadata, device authorization, an
// authorization endpoint that approves at once, a token endpoint for the device code,
// authorization code (checking PKCE) and refresh token grants, and, when asked, dynamic
// client registration (RFC 7591) with reads of the registration (RFC 7592).
type fakeIssuer struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	polls     int
	challenge string // PKCE code_challenge of the last authorization request
	redirect  string
	refreshes int
	issued    int
	revoked   bool
	resources []string // resource parameter of every token request

	// Set by tests before the first request.
	registration bool              // serve a registration_endpoint
	regReply     func() (int, any) // replaces the registration response when set
	issParam     *string           // iss added to the authorization response when set
	issPromised  bool              // metadata says authorization_response_iss_parameter_supported
	noDevice     bool              // no device_authorization_endpoint
	checkClients bool              // only "mail" and registered clients are known

	clients    map[string]bool // registered client IDs the issuer still knows
	registered []map[string]any
	lastClient string // client_id of the last token request
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{t: t, clients: map[string]bool{}}
	mux := http.NewServeMux()
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	iss := f.srv.URL
	fail := func(w http.ResponseWriter, status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":%q}`, code)
	}
	// known reports whether client_id is one the issuer knows; the caller holds f.mu.
	known := func(id string) bool { return !f.checkClients || id == "mail" || f.clients[id] }
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		m := map[string]any{
			"issuer": iss, "authorization_endpoint": iss + "/auth", "token_endpoint": iss + "/token",
			"device_authorization_endpoint": iss + "/device/auth", "jwks_uri": iss + "/jwks",
		}
		if f.noDevice {
			delete(m, "device_authorization_endpoint")
		}
		if f.registration {
			m["registration_endpoint"] = iss + "/reg"
		}
		if f.issPromised {
			m["authorization_response_iss_parameter_supported"] = true
		}
		json.NewEncoder(w).Encode(m)
	})
	mux.HandleFunc("/device/auth", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		f.mu.Lock()
		ok := known(r.Form.Get("client_id"))
		f.mu.Unlock()
		if !ok {
			fail(w, http.StatusUnauthorized, "invalid_client")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"device_code": "dc-1", "user_code": "WDJB-MJHT", "verification_uri": iss + "/device",
			"expires_in": 60, "interval": 1,
		})
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f.mu.Lock()
		f.challenge, f.redirect = q.Get("code_challenge"), q.Get("redirect_uri")
		issParam := f.issParam
		ok := known(q.Get("client_id"))
		f.mu.Unlock()
		if q.Get("code_challenge_method") != "S256" {
			t.Errorf("code_challenge_method %q", q.Get("code_challenge_method"))
		}
		if !ok {
			// RFC 6749 §4.1.2.1: an unknown client is told to the user, never redirected.
			http.Error(w, "invalid_client", http.StatusBadRequest)
			return
		}
		back := q.Get("redirect_uri") + "?code=ac-1&state=" + url.QueryEscape(q.Get("state"))
		if issParam != nil {
			back += "&iss=" + url.QueryEscape(*issParam)
		}
		http.Redirect(w, r, back, http.StatusFound)
	})
	mux.HandleFunc("POST /reg", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("registration request: %v", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.registered = append(f.registered, req)
		w.Header().Set("Content-Type", "application/json")
		if f.regReply != nil {
			status, body := f.regReply()
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(body)
			return
		}
		id := fmt.Sprintf("dyn-%d", len(f.registered))
		f.clients[id] = true
		req["client_id"] = id
		req["registration_access_token"] = "rat-" + id
		req["registration_client_uri"] = iss + "/reg/" + id
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(req)
	})
	mux.HandleFunc("GET /reg/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.clients[id] || r.Header.Get("Authorization") != "Bearer rat-"+id {
			fail(w, http.StatusUnauthorized, "invalid_token")
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"client_id": id})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.resources = append(f.resources, r.Form.Get("resource"))
		f.lastClient = r.Form.Get("client_id")
		if !known(f.lastClient) {
			fail(w, http.StatusUnauthorized, "invalid_client")
			return
		}
		switch r.Form.Get("grant_type") {
		case "urn:ietf:params:oauth:grant-type:device_code":
			f.polls++
			if f.polls == 1 {
				fail(w, http.StatusBadRequest, "authorization_pending")
				return
			}
		case "authorization_code":
			sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
			if r.Form.Get("code") != "ac-1" || base64.RawURLEncoding.EncodeToString(sum[:]) != f.challenge || r.Form.Get("redirect_uri") != f.redirect {
				fail(w, http.StatusBadRequest, "invalid_grant")
				return
			}
		case "refresh_token":
			if f.revoked || !strings.HasPrefix(r.Form.Get("refresh_token"), "rt-") {
				fail(w, http.StatusBadRequest, "invalid_grant")
				return
			}
			f.refreshes++
		default:
			fail(w, http.StatusBadRequest, "unsupported_grant_type")
			return
		}
		f.issued++
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": fmt.Sprintf("at-%d", f.issued), "token_type": "Bearer", "expires_in": 3600,
			"refresh_token": fmt.Sprintf("rt-%d", f.issued),
		})
	})
	return f
}

func (f *fakeIssuer) login(t *testing.T, file string, prompt io.Writer) *Login {
	return &Login{
		Issuer: f.srv.URL, ClientID: "mail", Scopes: []string{"openid", "offline_access"}, Resource: "urn:saslgate",
		File: file, Prompt: prompt, HTTPClient: f.srv.Client(),
	}
}

func TestDeviceFlowThenCacheThenRefresh(t *testing.T) {
	f := newFakeIssuer(t)
	file := filepath.Join(t.TempDir(), "sub", "login.json")
	var prompt strings.Builder
	l := f.login(t, file, &prompt)
	ctx := context.Background()

	tok, err := l.AccessToken(ctx)
	if err != nil || tok != "at-1" {
		t.Fatalf("first call: %q, %v", tok, err)
	}
	if !strings.Contains(prompt.String(), "/device and enter the code WDJB-MJHT") {
		t.Errorf("instructions: %q", prompt.String())
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", fi, err)
	}
	if di, _ := os.Stat(filepath.Dir(file)); di.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", di.Mode().Perm())
	}

	// Still valid: printed again without asking the issuer.
	if tok, err := l.AccessToken(ctx); err != nil || tok != "at-1" {
		t.Errorf("second call: %q, %v", tok, err)
	}
	// Valid for less than MinValidity: refreshed, and the rotated refresh token kept.
	l.MinValidity = 2 * time.Hour
	if tok, err := l.AccessToken(ctx); err != nil || tok != "at-2" {
		t.Errorf("refresh: %q, %v", tok, err)
	}
	st, err := Load(file)
	if err != nil || st.RefreshToken != "rt-2" || st.TokenURL != f.srv.URL+"/token" {
		t.Errorf("state after refresh: %+v, %v", st, err)
	}
	if f.refreshes != 1 {
		t.Errorf("%d refreshes", f.refreshes)
	}
	if want := []string{"urn:saslgate", "urn:saslgate", ""}; strings.Join(f.resources, ",") != strings.Join(want, ",") {
		t.Errorf("resource parameters %q, want %q", f.resources, want)
	}

	// A refused refresh token and no user at hand: say so, do not hang.
	f.revoked = true
	l.NonInteractive = true
	if _, err := l.AccessToken(ctx); !errors.Is(err, ErrLoginRequired) {
		t.Errorf("revoked, non-interactive: %v", err)
	}

	os.Chmod(file, 0o644)
	if _, err := l.AccessToken(ctx); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable state file: %v", err)
	}
}

func TestCodeFlowLoopback(t *testing.T) {
	f := newFakeIssuer(t)
	file := filepath.Join(t.TempDir(), "login.json")
	pr, pw := io.Pipe()
	l := f.login(t, file, pw)
	l.Flow = FlowCode
	// The test is the user's browser: it opens the printed URL and follows the redirect
	// back to the loopback listener.
	browser := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), f.srv.URL+"/auth?") {
				resp, err := http.Get(sc.Text())
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if !strings.Contains(string(body), "Signed in") {
						err = fmt.Errorf("browser shows %q", body)
					}
				}
				browser <- err
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	tok, err := l.AccessToken(context.Background())
	pw.Close()
	if err != nil || tok != "at-1" {
		t.Fatalf("code flow: %q, %v", tok, err)
	}
	if err := <-browser; err != nil {
		t.Error(err)
	}
	if !strings.HasPrefix(f.redirect, "http://127.0.0.1:") || !strings.HasSuffix(f.redirect, "/cb") {
		t.Errorf("redirect_uri %q, want a loopback one (RFC 8252 §7.3)", f.redirect)
	}
}

// signInWithBrowser runs l.AccessToken with the code flow while the test acts as the user's
// browser: it opens the printed URL and follows the redirects back to the loopback
// listener. It returns the token, the error and the last page the browser showed.
func signInWithBrowser(t *testing.T, f *fakeIssuer, l *Login) (tok, page string, err error) {
	t.Helper()
	pr, pw := io.Pipe()
	var prompt strings.Builder
	l.Prompt = io.MultiWriter(pw, &prompt)
	shown := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		got := ""
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), f.srv.URL+"/auth?") && got == "" {
				if resp, err := http.Get(sc.Text()); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					got = string(b)
				} else {
					got = err.Error()
				}
			}
		}
		shown <- got
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err = l.AccessToken(ctx)
	pw.Close()
	t.Logf("prompt:\n%s", prompt.String())
	return tok, <-shown, err
}

// registeredLogin is a login with no client configured, at an issuer with registration.
func registeredLogin(t *testing.T, f *fakeIssuer) (*Login, string) {
	f.registration, f.checkClients = true, true
	file := filepath.Join(t.TempDir(), "alice.json")
	l := f.login(t, file, io.Discard)
	l.ClientID, l.Flow = "", FlowCode
	return l, file
}

func TestRegistrationThenCodeFlow(t *testing.T) {
	f := newFakeIssuer(t)
	l, file := registeredLogin(t, f)
	tok, page, err := signInWithBrowser(t, f, l)
	if err != nil || tok != "at-1" || !strings.Contains(page, "Signed in") {
		t.Fatalf("sign-in: %q, %v, page %q", tok, err, page)
	}
	if len(f.registered) != 1 {
		t.Fatalf("%d registrations, want 1", len(f.registered))
	}
	req := f.registered[0]
	redirects, _ := req["redirect_uris"].([]any)
	if req["application_type"] != "native" || req["token_endpoint_auth_method"] != "none" ||
		fmt.Sprint(req["grant_types"]) != "[authorization_code refresh_token urn:ietf:params:oauth:grant-type:device_code]" ||
		len(redirects) != 2 || redirects[0] != "http://127.0.0.1/callback" || !strings.HasPrefix(redirects[1].(string), "http://127.0.0.1:") {
		t.Errorf("registration request %v", req)
	}
	if f.lastClient != "dyn-1" || !strings.HasSuffix(f.redirect, "/callback") {
		t.Errorf("token request from %q with redirect_uri %q, want the registered client and its redirect path", f.lastClient, f.redirect)
	}
	for _, p := range []string{file, RegistrationFile(file)} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, fi, err)
		}
	}
	reg, err := LoadRegistration(RegistrationFile(file))
	if err != nil || reg.ClientID != "dyn-1" || reg.Issuer != f.srv.URL || reg.RegistrationAccessToken != "rat-dyn-1" {
		t.Errorf("registration file: %+v, %v", reg, err)
	}

	// Later calls: the stored token, then a refresh with the registered client; no new
	// registration.
	l2 := f.login(t, file, io.Discard)
	l2.ClientID = ""
	if tok, err := l2.AccessToken(context.Background()); err != nil || tok != "at-1" {
		t.Errorf("second call: %q, %v", tok, err)
	}
	l2.MinValidity = 2 * time.Hour
	if tok, err := l2.AccessToken(context.Background()); err != nil || tok != "at-2" || f.lastClient != "dyn-1" {
		t.Errorf("refresh: %q, %v, by client %q", tok, err, f.lastClient)
	}
	// A new sign-in (the refresh token revoked) reuses the registration too.
	f.revoked = true
	if tok, _, err := signInWithBrowser(t, f, l2); err != nil || tok != "at-3" || len(f.registered) != 1 {
		t.Errorf("sign-in again: %q, %v, %d registrations", tok, err, len(f.registered))
	}
}

func TestForgottenRegistrationIsReplacedOnce(t *testing.T) {
	f := newFakeIssuer(t)
	l, file := registeredLogin(t, f)
	if _, _, err := signInWithBrowser(t, f, l); err != nil {
		t.Fatal(err)
	}
	// The issuer forgets every client (a reset database): the refresh fails with
	// invalid_client, the RFC 7592 read with 401.
	f.mu.Lock()
	f.clients = map[string]bool{}
	f.mu.Unlock()
	l2 := f.login(t, file, io.Discard)
	l2.ClientID, l2.Flow, l2.MinValidity = "", FlowCode, 2*time.Hour
	tok, _, err := signInWithBrowser(t, f, l2)
	if err != nil || tok != "at-2" || len(f.registered) != 2 || f.lastClient != "dyn-2" {
		t.Fatalf("after the issuer forgot the client: %q, %v, %d registrations, client %q", tok, err, len(f.registered), f.lastClient)
	}
	if reg, _ := LoadRegistration(RegistrationFile(file)); reg == nil || reg.ClientID != "dyn-2" {
		t.Errorf("registration file holds %+v, want dyn-2", reg)
	}

	// No token file, so no refresh to find out with: the RFC 7592 read of the registration
	// does, before the browser is sent to an issuer that would not know the client.
	f.mu.Lock()
	f.clients = map[string]bool{}
	f.mu.Unlock()
	os.Remove(file)
	if tok, _, err := signInWithBrowser(t, f, l2); err != nil || tok == "" || f.lastClient != "dyn-3" {
		t.Fatalf("code flow after the issuer forgot the client: %q, %v, client %q", tok, err, f.lastClient)
	}

	// Device flow: the device authorization request is where the unknown client shows;
	// replaced once, and a registration that keeps failing is not replaced again.
	f.mu.Lock()
	f.clients = map[string]bool{}
	f.mu.Unlock()
	os.Remove(file) // no refresh token to find out with
	reg, _ := LoadRegistration(RegistrationFile(file))
	reg.RegistrationClientURI = "" // no RFC 7592 read: the device request must find out
	if err := reg.Save(RegistrationFile(file)); err != nil {
		t.Fatal(err)
	}
	l3 := f.login(t, file, io.Discard)
	l3.ClientID, l3.Flow = "", FlowDevice
	if tok, err := l3.AccessToken(context.Background()); err != nil || len(f.registered) != 4 || f.lastClient != "dyn-4" {
		t.Errorf("device flow after the issuer forgot the client: %q, %v, %d registrations", tok, err, len(f.registered))
	}
	f.mu.Lock()
	f.regReply = func() (int, any) {
		return http.StatusCreated, map[string]any{"client_id": "ghost", "grant_types": []string{grantDeviceCode}}
	}
	f.clients = map[string]bool{}
	f.mu.Unlock()
	reg, _ = LoadRegistration(RegistrationFile(file))
	reg.RegistrationClientURI = ""
	reg.Save(RegistrationFile(file))
	os.Remove(file)
	_, err = l3.AccessToken(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid_client") || len(f.registered) != 5 {
		t.Errorf("a replacement the issuer does not know either: %v, %d registrations; want invalid_client after one replacement", err, len(f.registered))
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Error("the token file changed although no token was obtained")
	}

	// Replaced once also when the refresh found out: the replacement is not replaced again
	// when the device request refuses it too.
	f.mu.Lock()
	f.regReply, f.clients, f.polls = nil, map[string]bool{}, 0
	f.mu.Unlock()
	if _, err := l3.AccessToken(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.clients = map[string]bool{}
	f.regReply = func() (int, any) {
		return http.StatusCreated, map[string]any{"client_id": "ghost", "grant_types": []string{grantDeviceCode}}
	}
	n := len(f.registered)
	f.mu.Unlock()
	l3.MinValidity = 2 * time.Hour
	if _, err := l3.AccessToken(context.Background()); err == nil || len(f.registered) != n+1 {
		t.Errorf("refresh refused, replacement refused: %v, %d new registrations; want an error after 1", err, len(f.registered)-n)
	}
}

func TestStoredTokenIsForItsIssuerClientAndResource(t *testing.T) {
	f := newFakeIssuer(t)
	file := filepath.Join(t.TempDir(), "alice.json")
	l := f.login(t, file, io.Discard)
	if tok, err := l.AccessToken(context.Background()); err != nil || tok != "at-1" {
		t.Fatalf("%q, %v", tok, err)
	}
	// Another resource: the stored token's audience is not that one.
	l.Resource = "https://mail.example.com"
	if tok, err := l.AccessToken(context.Background()); err != nil || tok != "at-2" || f.resources[len(f.resources)-1] != "https://mail.example.com" {
		t.Errorf("another resource: %q, %v; want a new token for it", tok, err)
	}
	// A registration kept for another issuer is not used at this one.
	other := newFakeIssuer(t)
	other.registration = true
	if err := (&Registration{Issuer: f.srv.URL, ClientID: "dyn-of-f"}).Save(RegistrationFile(file)); err != nil {
		t.Fatal(err)
	}
	l2 := other.login(t, file, io.Discard)
	l2.ClientID = ""
	if _, err := l2.AccessToken(context.Background()); err != nil || len(other.registered) != 1 || other.lastClient != "dyn-1" {
		t.Errorf("registration of another issuer: %v, %d registrations, client %q", err, len(other.registered), other.lastClient)
	}
}

func TestNoClientNoRegistration(t *testing.T) {
	f := newFakeIssuer(t)
	file := filepath.Join(t.TempDir(), "alice.json")
	l := f.login(t, file, io.Discard)
	l.ClientID = ""
	_, err := l.AccessToken(context.Background())
	if !errors.Is(err, ErrNoRegistration) || !strings.Contains(err.Error(), "--client-id") || !strings.Contains(err.Error(), "registration_endpoint") {
		t.Errorf("err %v, want ErrNoRegistration naming registration_endpoint and --client-id", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
}

func TestRegistrationRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   any
		want   string
	}{
		{"invalid redirect URI", http.StatusBadRequest, map[string]string{"error": "invalid_redirect_uri", "error_description": "loopback not allowed"}, "HTTP 400 invalid_redirect_uri: loopback not allowed"},
		{"initial access token required", http.StatusUnauthorized, map[string]string{"error": "invalid_token"}, "initial access token"},
		{"no client_id", http.StatusCreated, map[string]string{"client_secret": "x"}, "no usable client_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			l, file := registeredLogin(t, f)
			f.regReply = func() (int, any) { return tc.status, tc.body }
			_, err := l.AccessToken(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 0 {
				t.Errorf("files written: %v", entries)
			}
		})
	}
}

func TestIssuerOfTheAuthorizationResponse(t *testing.T) {
	other, empty := "https://evil.example", ""
	for _, tc := range []struct {
		name     string
		iss      *string
		promised bool
		want     string // "" for success
	}{
		{"iss of another issuer", &other, false, `comes from issuer "https://evil.example"`},
		{"empty iss", &empty, false, `comes from issuer ""`},
		{"no iss although promised", nil, true, "authorization_response_iss_parameter_supported"},
		{"no iss, not promised", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			f.issParam, f.issPromised = tc.iss, tc.promised
			file := filepath.Join(t.TempDir(), "alice.json")
			l := f.login(t, file, io.Discard)
			l.Flow = FlowCode
			tok, page, err := signInWithBrowser(t, f, l)
			if tc.want == "" {
				if err != nil || tok == "" {
					t.Errorf("%q, %v; want a token", tok, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(page, "Sign-in failed") {
				t.Errorf("err %v, page %q; want %q", err, page, tc.want)
			}
			if f.issued != 0 {
				t.Error("the code was redeemed")
			}
			if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("token file: %v; want none", err)
			}
		})
	}
	// The issuer's own iss passes.
	f := newFakeIssuer(t)
	own := f.srv.URL
	f.issParam, f.issPromised = &own, true
	l := f.login(t, filepath.Join(t.TempDir(), "alice.json"), io.Discard)
	l.Flow = FlowCode
	if tok, _, err := signInWithBrowser(t, f, l); err != nil || tok != "at-1" {
		t.Errorf("own iss: %q, %v", tok, err)
	}
}

func TestMetadataRFC8414ThenAutoconfigEndpoints(t *testing.T) {
	// An issuer with a path publishes only RFC 8414 metadata, at the well-known path
	// inserted before its path (§3.1).
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	iss := srv.URL + "/tenant"
	var paths []string
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		if r.URL.Path != "/.well-known/oauth-authorization-server/tenant" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "token_endpoint": iss + "/token", "registration_endpoint": iss + "/reg", "authorization_response_iss_parameter_supported": true})
	})
	l := &Login{Issuer: iss, HTTPClient: srv.Client(), Prompt: io.Discard}
	m, err := l.metadata(context.Background())
	if err != nil || m.RegistrationEndpoint != iss+"/reg" || !m.AuthorizationResponseIssParameterSupported {
		t.Fatalf("metadata %+v, %v (asked %v)", m, err, paths)
	}
	// No metadata anywhere: the autoconfig document's endpoints stand in.
	l = &Login{Issuer: srv.URL + "/none", AuthURL: srv.URL + "/a", TokenURL: srv.URL + "/t", HTTPClient: srv.Client(), Prompt: io.Discard}
	if m, err := l.metadata(context.Background()); err != nil || m.AuthorizationEndpoint != srv.URL+"/a" || m.Issuer != l.Issuer {
		t.Errorf("fallback metadata %+v, %v", m, err)
	}
	l.AuthURL = ""
	if _, err := l.metadata(context.Background()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("no metadata: %v", err)
	}
}

func TestRegistrationWithoutDeviceGrant(t *testing.T) {
	// An issuer without the device grant: the client asks for none, and the flow left to
	// choose is the code flow.
	f := newFakeIssuer(t)
	f.noDevice = true
	l, _ := registeredLogin(t, f)
	l.Flow = ""
	if tok, _, err := signInWithBrowser(t, f, l); err != nil || tok != "at-1" {
		t.Fatalf("%q, %v", tok, err)
	}
	if g := fmt.Sprint(f.registered[0]["grant_types"]); g != "[authorization_code refresh_token]" {
		t.Errorf("grant_types %s, want no device_code without a device_authorization_endpoint", g)
	}
}
