package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/oauthlogin"
	"github.com/saslgate/saslgate/introspect"
)

const loginUsage = `usage: saslgate login [flags]

Prints an access token for you on standard output, for mail clients that run a command for
their OAuth token (msmtp passwordeval, mutt/neomutt *_oauth_refresh_command, curl). The first
call signs you in at the issuer (device code, or --flow code for a browser on this machine)
and keeps the refresh token in --token-file (mode 0600); later calls print the stored token
while it stays valid, else a refreshed one. Instructions go to standard error.

The issuer and client come from the flags, else --config (its first issuer), else the token
file of an earlier login.

`

func loginCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, loginUsage); fs.PrintDefaults() }
	path := fs.String("config", "", "saslgate configuration `file` to take the issuer from")
	issuerURL := fs.String("issuer", "", "issuer `URL`")
	clientID := fs.String("client-id", "", "OAuth client `ID` registered at the issuer for mail clients")
	secretFile := fs.String("client-secret-file", "", "`file` with the client secret, for confidential clients")
	scope := fs.String("scope", "", "space-separated scopes (default \"openid offline_access\" plus the scopes the gateway requires, or \"openid email offline_access\")")
	resource := fs.String("resource", "", "RFC 8707 resource indicator to send (e.g. urn:saslgate)")
	flow := fs.String("flow", oauthlogin.FlowDevice, "sign-in `flow`: device (RFC 8628) or code (browser, loopback redirect)")
	tokenFile := fs.String("token-file", defaultTokenFile(), "where the refresh token is kept (mode 0600)")
	minValidity := fs.Duration("min-validity", oauthlogin.DefaultMinValidity, "refresh a stored access token valid for less than this")
	nonInteractive := fs.Bool("non-interactive", false, "fail instead of starting a sign-in when no refresh token works")
	caFile := fs.String("ca-file", "", "PEM `file` of CAs trusted for the issuer (default: system roots, or the config's ca_file)")
	redirect := fs.String("redirect-address", "127.0.0.1:0", "loopback `address` for --flow code's redirect listener")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the sign-in")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("login: unexpected argument %q", fs.Arg(0))
	}

	l := &oauthlogin.Login{
		Issuer: *issuerURL, ClientID: *clientID, Resource: *resource, Flow: *flow,
		File: *tokenFile, MinValidity: *minValidity, NonInteractive: *nonInteractive,
		Prompt: stderr, RedirectAddress: *redirect,
	}
	var ic introspect.IssuerConfig
	if *path != "" {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		ic = cfg.Tokens.Issuers[0]
		if l.Issuer != "" {
			i := slices.IndexFunc(cfg.Tokens.Issuers, func(c introspect.IssuerConfig) bool { return c.Issuer == l.Issuer })
			if i < 0 {
				return fmt.Errorf("login: %s is not an issuer of %s", l.Issuer, *path)
			}
			ic = cfg.Tokens.Issuers[i]
		}
		l.Issuer, l.DiscoveryURL = ic.Issuer, discoveryURL(ic)
	}
	if l.Issuer == "" || l.ClientID == "" {
		// A later call: take them from the token file of the first one.
		st, err := oauthlogin.Load(l.File)
		switch {
		case err == nil:
			l.Issuer, l.ClientID = cmpOr(l.Issuer, st.Issuer), cmpOr(l.ClientID, st.ClientID)
			if *scope == "" {
				l.Scopes = st.Scopes
			}
		case !errors.Is(err, oauthlogin.ErrNoState):
			return err
		}
	}
	if l.Issuer == "" || l.ClientID == "" {
		fs.Usage()
		return errors.New("login: --issuer (or --config) and --client-id are required for the first sign-in")
	}
	if *scope != "" {
		l.Scopes = strings.Fields(*scope)
	} else if l.Scopes == nil {
		l.Scopes = defaultLoginScopes(ic)
	}
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return err
		}
		l.ClientSecret = strings.TrimSpace(string(b))
	}
	if *caFile != "" {
		ic.CAFile, ic.InsecureSkipVerify = *caFile, false
	}
	client, err := introspect.NewHTTPClient(ic)
	if err != nil {
		return err
	}
	l.HTTPClient = client

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	tok, err := l.AccessToken(ctx)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// defaultLoginScopes asks for OpenID, a refresh token and whatever the gateway requires.
func defaultLoginScopes(ic introspect.IssuerConfig) []string {
	scopes := []string{"openid", "offline_access"}
	if ic.Issuer == "" {
		return append(scopes, "email")
	}
	for _, s := range ic.RequiredScopes() {
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return scopes
}

func defaultTokenFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "saslgate-login.json"
	}
	return filepath.Join(dir, "saslgate", "login.json")
}
