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

// fakeIssuer is a minimal authorization server: discovery, device authorization, an
// authorization endpoint that approves at once, and a token endpoint for the device code,
// authorization code (checking PKCE) and refresh token grants.
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
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{t: t}
	mux := http.NewServeMux()
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	iss := f.srv.URL
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{
			"issuer": iss, "authorization_endpoint": iss + "/auth", "token_endpoint": iss + "/token",
			"device_authorization_endpoint": iss + "/device/auth", "jwks_uri": iss + "/jwks",
		})
	})
	mux.HandleFunc("/device/auth", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"device_code": "dc-1", "user_code": "WDJB-MJHT", "verification_uri": iss + "/device",
			"expires_in": 60, "interval": 1,
		})
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f.mu.Lock()
		f.challenge, f.redirect = q.Get("code_challenge"), q.Get("redirect_uri")
		f.mu.Unlock()
		if q.Get("code_challenge_method") != "S256" {
			t.Errorf("code_challenge_method %q", q.Get("code_challenge_method"))
		}
		http.Redirect(w, r, q.Get("redirect_uri")+"?code=ac-1&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.resources = append(f.resources, r.Form.Get("resource"))
		fail := func(code string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q}`, code)
		}
		switch r.Form.Get("grant_type") {
		case "urn:ietf:params:oauth:grant-type:device_code":
			f.polls++
			if f.polls == 1 {
				fail("authorization_pending")
				return
			}
		case "authorization_code":
			sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
			if r.Form.Get("code") != "ac-1" || base64.RawURLEncoding.EncodeToString(sum[:]) != f.challenge || r.Form.Get("redirect_uri") != f.redirect {
				fail("invalid_grant")
				return
			}
		case "refresh_token":
			if f.revoked || !strings.HasPrefix(r.Form.Get("refresh_token"), "rt-") {
				fail("invalid_grant")
				return
			}
			f.refreshes++
		default:
			fail("unsupported_grant_type")
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
