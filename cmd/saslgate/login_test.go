package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// loginIssuer is an issuer for `saslgate login` from an address: metadata with a
// registration endpoint, and a device grant the user approves at once.
type loginIssuer struct {
	srv        *httptest.Server
	mu         sync.Mutex
	registered []map[string]any
	forms      []url.Values // device authorization and token requests
}

func newLoginIssuer(t *testing.T) *loginIssuer {
	li := &loginIssuer{}
	mux := http.NewServeMux()
	li.srv = httptest.NewServer(mux)
	t.Cleanup(li.srv.Close)
	iss := li.srv.URL
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": iss, "authorization_endpoint": iss + "/auth", "token_endpoint": iss + "/token",
			"device_authorization_endpoint": iss + "/device", "registration_endpoint": iss + "/reg",
		})
	})
	mux.HandleFunc("POST /reg", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		json.NewDecoder(r.Body).Decode(&req)
		li.mu.Lock()
		li.registered = append(li.registered, req)
		req["client_id"] = fmt.Sprintf("dyn-%d", len(li.registered))
		li.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(req)
	})
	record := func(r *http.Request) {
		r.ParseForm()
		li.mu.Lock()
		li.forms = append(li.forms, r.Form)
		li.mu.Unlock()
	}
	mux.HandleFunc("POST /device", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		json.NewEncoder(w).Encode(map[string]any{"device_code": "dc", "user_code": "ABCD-EFGH", "verification_uri": iss + "/verify", "expires_in": 60, "interval": 1})
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at-for-alice", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt"})
	})
	return li
}

// mailSite serves the domain's autoconfig document and the mail server's RFC 9728 metadata,
// by Host header, as --discovery-base reaches it.
func mailSite(t *testing.T, issuer string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Host + " " + r.URL.Path {
		case "autoconfig.example.com /mail/config-v1.1.xml":
			fmt.Fprintf(w, `<clientConfig version="1.1"><emailProvider id="example.com"><domain>example.com</domain>
<incomingServer type="imap"><hostname>mail.example.com</hostname><port>993</port><socketType>SSL</socketType><authentication>OAuth2</authentication><username>%%EMAILADDRESS%%</username></incomingServer>
<incomingServer type="pop3"><hostname>mail.example.com</hostname><port>110</port><socketType>STARTTLS</socketType><authentication>OAuth2</authentication><username>%%EMAILADDRESS%%</username></incomingServer>
<outgoingServer type="smtp"><hostname>mail.example.com</hostname><port>587</port><socketType>STARTTLS</socketType><authentication>OAuth2</authentication><username>%%EMAILADDRESS%%</username></outgoingServer>
</emailProvider><oAuth2><issuer>%s</issuer><scope>openid email</scope></oAuth2></clientConfig>`, issuer)
		case "mail.example.com /.well-known/oauth-protected-resource":
			fmt.Fprintf(w, `{"resource":"https://mail.example.com","authorization_servers":[%q]}`, issuer)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func loginRun(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	err = loginCmd(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestLoginFromAddressPrintsConfigs(t *testing.T) {
	li := newLoginIssuer(t)
	site := mailSite(t, li.srv.URL)
	file := filepath.Join(t.TempDir(), "alice.json")
	common := []string{"--discovery-base", site.URL, "--token-file", file}

	// Flags after the address, as people type them.
	out, errs, err := loginRun(append([]string{"alice@example.com", "--print-config", "msmtp"}, common...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errs)
	}
	for _, want := range []string{
		"discover: autoconfig: found servers with OAuth: imaps://mail.example.com:993 pop3+stls://mail.example.com:110 submission://mail.example.com:587",
		"discover: RFC 9728: resource https://mail.example.com",
		"saslgate login: registered the client dyn-1 at " + li.srv.URL + "/reg (RFC 7591)",
		"To sign in, open " + li.srv.URL + "/verify and enter the code ABCD-EFGH",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	exe, _ := os.Executable()
	tokenCmd := exe + " login --token-file " + file + " --non-interactive"
	wantMSMTP := "account alice@example.com\nhost mail.example.com\nport 587\ntls on\ntls_starttls on\nauth oauthbearer\nuser alice@example.com\nfrom alice@example.com\npasswordeval \"" + tokenCmd + "\"\n\naccount default : alice@example.com\n"
	if !strings.HasSuffix(out, wantMSMTP) {
		t.Errorf("msmtp configuration:\n%s\nwant it to end with:\n%s", out, wantMSMTP)
	}
	if len(li.registered) != 1 || li.forms[0].Get("resource") != "https://mail.example.com" || li.forms[0].Get("client_id") != "dyn-1" || li.forms[0].Get("scope") != "openid email offline_access" {
		t.Errorf("registrations %v, device request %v", li.registered, li.forms[0])
	}

	// The other clients, from the same sign-in: no new registration, no new token.
	for _, tc := range []struct {
		client string
		want   []string
	}{
		{"mutt", []string{`set folder = "imaps://mail.example.com:993/"`, `set imap_authenticators = "oauthbearer"`, `set imap_oauth_refresh_command = "` + tokenCmd + `"`, `set smtp_url = "smtp://alice%40example.com@mail.example.com:587/"`, "set ssl_starttls = yes"}},
		{"neomutt", []string{"# neomutt configuration", `set smtp_oauth_refresh_command = "` + tokenCmd + `"`}},
		{"mbsync", []string{"IMAPAccount alice@example.com\nHost mail.example.com\nPort 993\nUser alice@example.com\nPassCmd \"" + tokenCmd + "\"\nAuthMechs XOAUTH2\nTLSType IMAPS\n", "Far :alice@example.com-remote:"}},
		{"curl", []string{"curl --user alice@example.com: --oauth2-bearer \"$(" + tokenCmd + ")\" imaps://mail.example.com:993/", "curl --ssl-reqd --user alice@example.com: --oauth2-bearer \"$(" + tokenCmd + ")\" pop3://mail.example.com:110/", "--mail-from alice@example.com --mail-rcpt RECIPIENT --upload-file message.eml smtp://mail.example.com:587"}},
		{"thunderbird", []string{`<incomingServer type="imap">`, "<socketType>STARTTLS</socketType>", "<issuer>" + li.srv.URL + "</issuer>", "<scope>openid email offline_access</scope>"}},
	} {
		out, errs, err := loginRun(append(common, "--print-config", tc.client, "alice@example.com")...)
		if err != nil {
			t.Errorf("%s: %v\n%s", tc.client, err, errs)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s configuration lacks %q:\n%s", tc.client, w, out)
			}
		}
	}
	if len(li.registered) != 1 || len(li.forms) != 2 {
		t.Errorf("%d registrations, %d issuer requests after printing the configurations; want 1 and 2", len(li.registered), len(li.forms))
	}

	// The token command the configurations run: only the token file, no discovery.
	out, errs, err = loginRun("--token-file", file, "--non-interactive")
	if err != nil || out != "at-for-alice\n" || strings.Contains(errs, "discover:") {
		t.Errorf("token command: %v, %q, %q", err, out, errs)
	}
}

func TestLoginArguments(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--print-config", "outlook", "alice@example.com"}, `--print-config "outlook": want one of msmtp, mutt, neomutt, mbsync, curl, thunderbird`},
		{[]string{"--print-config", "mutt"}, "--print-config needs your email address"},
		{[]string{"alice@example.com", "bob@example.com"}, `unexpected argument "bob@example.com"`},
		{[]string{"--token-file", file}, "give your email address (saslgate login alice@example.com), or --issuer"},
		{[]string{"--discovery-base", "http://127.0.0.1:1"}, "--discovery-base needs an address"},
		{[]string{"--server", "http://mail.example.com", "alice@example.com"}, "want imaps://"},
		{[]string{"--token-file", file, "alice"}, `"alice" is not an email address`},
	} {
		_, _, err := loginRun(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestLoginNothingDiscovered(t *testing.T) {
	site := httptest.NewServer(http.NotFoundHandler())
	defer site.Close()
	file := filepath.Join(t.TempDir(), "alice.json")
	_, errs, err := loginRun("--discovery-base", site.URL, "--token-file", file, "alice@example.com")
	if err == nil || !strings.Contains(err.Error(), "found no issuer for alice@example.com") || !strings.Contains(errs, "discover: SASL: no mail server known") {
		t.Errorf("%v\n%s", err, errs)
	}
	// No servers for a configuration: say how to give them.
	li := newLoginIssuer(t)
	_, _, err = loginRun("--discovery-base", site.URL, "--token-file", file, "--issuer", li.srv.URL, "--print-config", "msmtp", "alice@example.com")
	if err == nil || !strings.Contains(err.Error(), "--server imaps://HOST:993") {
		t.Errorf("print-config without servers: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/saslgate": "/usr/bin/saslgate",
		"/home/a b/x.json":  `'/home/a b/x.json'`,
		"it's":              `'it'\''s'`,
		"":                  "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := dquote("a\"b`$c", "\\\"`$"); got != "\"a\\\"b\\`\\$c\"" {
		t.Errorf("dquote: %s", got)
	}
}
