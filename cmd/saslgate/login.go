package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/maildiscover"
	"github.com/saslgate/saslgate/internal/oauthlogin"
	"github.com/saslgate/saslgate/internal/probe"
	"github.com/saslgate/saslgate/introspect"
)

const loginUsage = `usage: saslgate login [flags] [ADDRESS]

Prints an access token for you on standard output, for mail clients that run a command for
their OAuth token (msmtp passwordeval, mutt/neomutt *_oauth_refresh_command, curl). The first
call signs you in at the issuer (device code, or --flow code for a browser on this machine)
and keeps the refresh token in --token-file (mode 0600); later calls print the stored token
while it stays valid, else a refreshed one. Instructions go to standard error.

With your email ADDRESS (saslgate login alice@example.com) the mail servers and the issuer
are discovered from the address: the domain's autoconfig document, else WebFinger, else the
RFC 9728 metadata of the mail server, else the error a mail server answers an invalid token
with. Each step says on standard error what it tried and found. Without a client ID a client
is registered at the issuer (RFC 7591) and kept beside the token file. --print-config then
prints a configuration for a mail client instead of the token.

Without an address, the issuer and client come from the flags, else --config (its first
issuer), else the token file of an earlier login.

`

// printConfigClients are the mail clients --print-config knows.
var printConfigClients = []string{"msmtp", "mutt", "neomutt", "mbsync", "curl", "thunderbird"}

// serverFlags collects --server.
type serverFlags []maildiscover.Server

var _ flag.Value = (*serverFlags)(nil)

func (s *serverFlags) String() string { return "" }

func (s *serverFlags) Set(v string) error {
	srv, err := maildiscover.ParseServerURL(v)
	if err != nil {
		return err
	}
	*s = append(*s, srv)
	return nil
}

func loginCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, loginUsage); fs.PrintDefaults() }
	path := fs.String("config", "", "saslgate configuration `file` to take the issuer from")
	issuerURL := fs.String("issuer", "", "issuer `URL` (default: discovered from ADDRESS)")
	clientID := fs.String("client-id", "", "OAuth client `ID` registered at the issuer for mail clients (default: the autoconfig document's, else one registered now, RFC 7591)")
	secretFile := fs.String("client-secret-file", "", "`file` with the client secret, for confidential clients")
	scope := fs.String("scope", "", "space-separated scopes (default: the discovered ones plus offline_access; without discovery \"openid offline_access\" plus the scopes the gateway requires, or \"openid email offline_access\")")
	resource := fs.String("resource", "", "RFC 8707 resource indicator to send, e.g. https://mail.example.com (default: discovered; \"none\" sends none)")
	flow := fs.String("flow", "", "sign-in `flow`: device (RFC 8628) or code (browser, loopback redirect); default device where the issuer offers it, else code")
	tokenFile := fs.String("token-file", "", "where the refresh token is kept, mode 0600 (default "+defaultTokenFile()+", or login-ADDRESS.json beside it with an ADDRESS)")
	minValidity := fs.Duration("min-validity", oauthlogin.DefaultMinValidity, "refresh a stored access token valid for less than this")
	nonInteractive := fs.Bool("non-interactive", false, "fail instead of starting a sign-in when no refresh token works")
	caFile := fs.String("ca-file", "", "PEM `file` of CAs trusted for the issuer, the discovery documents and the mail servers (default: system roots, or the config's ca_file)")
	redirect := fs.String("redirect-address", "", "loopback `address` for --flow code's redirect listener (default 127.0.0.1 and any free port)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the sign-in")
	var servers serverFlags
	fs.Var(&servers, "server", "mail server `URL` (imaps://host:993, submissions://host:465, …; repeatable) instead of the autoconfig document's")
	printConfig := fs.String("print-config", "", "print a configuration for `CLIENT` ("+strings.Join(printConfigClients, ", ")+") instead of the token; needs ADDRESS")
	discoveryBase := fs.String("discovery-base", "", "FOR TESTS ONLY: fetch every https://HOST/PATH discovery URL from `URL`/PATH with Host: HOST (no TLS check of the documents), accept http issuers, skip the MX lookup")
	positional, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 1 {
		fs.Usage()
		return fmt.Errorf("login: unexpected argument %q", positional[1])
	}
	address := ""
	if len(positional) == 1 {
		address = positional[0]
	}
	if *printConfig != "" && !slices.Contains(printConfigClients, *printConfig) {
		return fmt.Errorf("login: --print-config %q: want one of %s", *printConfig, strings.Join(printConfigClients, ", "))
	}
	if *printConfig != "" && address == "" {
		return errors.New("login: --print-config needs your email address: saslgate login alice@example.com --print-config " + *printConfig)
	}
	if *discoveryBase != "" && address == "" {
		return errors.New("login: --discovery-base needs an address to discover")
	}
	if *tokenFile == "" {
		*tokenFile = defaultTokenFile()
		if address != "" {
			*tokenFile = filepath.Join(filepath.Dir(*tokenFile), "login-"+address+".json")
		}
	}

	l := &oauthlogin.Login{
		Issuer: *issuerURL, ClientID: *clientID, Flow: *flow,
		File: *tokenFile, MinValidity: *minValidity, NonInteractive: *nonInteractive,
		Prompt: stderr, RedirectAddress: *redirect,
	}
	resourceGiven := *resource != ""
	if *resource != "none" {
		l.Resource = *resource
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
	var discovered *maildiscover.Result
	if address != "" {
		tc, err := mailTLSConfig(ic.CAFile)
		if err != nil {
			return err
		}
		d := &maildiscover.Discoverer{
			HTTPClient: client, Base: *discoveryBase, Servers: servers, TLSConfig: tc, Log: stderr,
			SkipIssuer: l.Issuer != "", SkipResource: resourceGiven,
			Confirm: func(q string) bool { return !*nonInteractive && confirm(os.Stdin, stderr, q) },
		}
		if discovered, err = d.Discover(ctx, address); err != nil {
			return err
		}
		if l.Issuer == "" {
			if discovered.Issuer == "" {
				return fmt.Errorf("login: found no issuer for %s (see above); pass --issuer", address)
			}
			l.Issuer, l.DiscoveryURL = discovered.Issuer, discovered.DiscoveryURL
			if discovered.IssuerSource == maildiscover.SourceAutoconfig {
				// The draft lets the client skip metadata and registration with these.
				l.AuthURL, l.TokenURL = discovered.AuthURL, discovered.TokenURL
				if l.ClientID == "" {
					l.ClientID, l.ClientSecret = discovered.ClientID, cmpOr(l.ClientSecret, discovered.ClientSecret)
				}
			}
		}
		if !resourceGiven {
			l.Resource = discovered.Resource
		}
		if *scope == "" && len(discovered.Scopes) > 0 {
			// A token command needs a refresh token.
			l.Scopes = discovered.Scopes
			if !slices.Contains(l.Scopes, "offline_access") {
				l.Scopes = append(slices.Clip(l.Scopes), "offline_access")
			}
		}
	} else if l.Issuer == "" || l.ClientID == "" || !resourceGiven {
		// A later call: take what was not given from the token file of the first one.
		st, err := oauthlogin.Load(l.File)
		switch {
		case err == nil && (l.Issuer == "" || l.Issuer == st.Issuer):
			l.Issuer, l.ClientID = st.Issuer, cmpOr(l.ClientID, st.ClientID)
			if *scope == "" {
				l.Scopes = st.Scopes
			}
			if !resourceGiven {
				l.Resource = st.Resource
			}
		case err != nil && !errors.Is(err, oauthlogin.ErrNoState):
			return err
		}
	}
	if l.Issuer == "" {
		fs.Usage()
		return errors.New("login: give your email address (saslgate login alice@example.com), or --issuer (or --config) for the first sign-in")
	}
	if *scope != "" {
		l.Scopes = strings.Fields(*scope)
	} else if l.Scopes == nil {
		l.Scopes = defaultLoginScopes(ic)
	}

	tok, err := l.AccessToken(ctx)
	if err != nil {
		return err
	}
	if *printConfig == "" {
		_, err = fmt.Fprintln(stdout, tok)
		return err
	}
	a, err := newMailAccount(address, discovered, l, ic.CAFile)
	if err != nil {
		return err
	}
	return a.print(stdout, *printConfig)
}

// parseInterleaved parses flags before and after the positional arguments, so that
// `saslgate login alice@example.com --print-config mutt` reads like it is written.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// mailTLSConfig is the TLS configuration for the mail servers the SASL step probes: the CA
// file's certificates when set, else the system roots.
func mailTLSConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("login: %s: no PEM certificates found", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// confirm asks question on w and reads a yes from r.
func confirm(r io.Reader, w io.Writer, question string) bool {
	fmt.Fprintf(w, "%s [y/N] ", question)
	line, _ := bufio.NewReader(r).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
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

// mailAccount is what --print-config writes a configuration from.
type mailAccount struct {
	address string
	// The first server of each kind, nil when the account has none.
	imap, pop3, smtp, sieve     *maildiscover.Server
	tokenCommand                string // runs `saslgate login` for a fresh token
	caFile                      string // absolute; "" for the system roots
	issuer, scope, resource     string
	authURL, tokenURL, clientID string // for Thunderbird's oAuth2 element
}

func newMailAccount(address string, d *maildiscover.Result, l *oauthlogin.Login, caFile string) (*mailAccount, error) {
	if d == nil || len(d.Servers) == 0 {
		return nil, fmt.Errorf("login: no mail servers known for %s (the domain publishes no autoconfig document); give them with --server imaps://HOST:993 --server submissions://HOST:465", address)
	}
	a := &mailAccount{address: address, issuer: l.Issuer, scope: strings.Join(l.Scopes, " "), resource: l.Resource, authURL: l.AuthURL, tokenURL: l.TokenURL}
	if d.IssuerSource == maildiscover.SourceAutoconfig {
		a.clientID = d.ClientID
	}
	for i := range d.Servers {
		s := &d.Servers[i]
		for _, k := range []struct {
			typ string
			dst **maildiscover.Server
		}{{maildiscover.TypeIMAP, &a.imap}, {maildiscover.TypePOP3, &a.pop3}, {maildiscover.TypeSMTP, &a.smtp}, {maildiscover.TypeManageSieve, &a.sieve}} {
			if s.Type == k.typ && *k.dst == nil {
				*k.dst = s
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		exe = "saslgate"
	}
	file, err := filepath.Abs(l.File)
	if err != nil {
		return nil, err
	}
	a.tokenCommand = shellQuote(exe) + " login --token-file " + shellQuote(file) + " --non-interactive"
	if caFile != "" {
		if a.caFile, err = filepath.Abs(caFile); err != nil {
			return nil, err
		}
		a.tokenCommand += " --ca-file " + shellQuote(a.caFile)
	}
	return a, nil
}

// user is the login name a server wants: its autoconfig username, else the address.
func (a *mailAccount) user(s *maildiscover.Server) string { return cmpOr(s.Username, a.address) }

// name is the account's name where a configuration needs one without spaces or quotes.
func (a *mailAccount) name() string {
	return unsafeInName.ReplaceAllString(a.address, "-")
}

func (a *mailAccount) print(w io.Writer, clientName string) error {
	var b strings.Builder
	var err error
	switch clientName {
	case "msmtp":
		err = a.msmtp(&b)
	case "mutt", "neomutt":
		err = a.mutt(&b, clientName)
	case "mbsync":
		err = a.mbsync(&b)
	case "curl":
		err = a.curl(&b)
	case "thunderbird":
		err = a.thunderbird(&b)
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func (a *mailAccount) msmtp(b *strings.Builder) error {
	s := a.smtp
	if s == nil {
		return fmt.Errorf("login: %s has no SMTP server with OAuth to configure msmtp for", a.address)
	}
	fmt.Fprintf(b, "# msmtp configuration for %s, from `saslgate login --print-config msmtp`: put it in ~/.msmtprc (mode 0600)\n", a.address)
	fmt.Fprintf(b, "account %s\nhost %s\nport %d\n", a.name(), s.Host, s.Port)
	switch s.TLS {
	case probe.TLSImplicit:
		b.WriteString("tls on\ntls_starttls off\n")
	case probe.TLSStartTLS:
		b.WriteString("tls on\ntls_starttls on\n")
	default:
		b.WriteString("tls off\n")
	}
	if a.caFile != "" {
		fmt.Fprintf(b, "tls_trust_file %s\n", a.caFile)
	}
	fmt.Fprintf(b, "auth oauthbearer\nuser %s\nfrom %s\npasswordeval %s\n\naccount default : %s\n", a.user(s), a.address, dquote(a.tokenCommand, `\"`), a.name())
	return nil
}

func (a *mailAccount) mutt(b *strings.Builder, clientName string) error {
	if a.imap == nil && a.pop3 == nil && a.smtp == nil {
		return fmt.Errorf("login: %s has no IMAP, POP3 or SMTP server with OAuth to configure %s for", a.address, clientName)
	}
	// mutt expands backticks and $ in double quotes: escape them.
	q := func(s string) string { return dquote(s, "\\\"`$") }
	fmt.Fprintf(b, "# %s configuration for %s, from `saslgate login --print-config %s`\n", clientName, a.address, clientName)
	if clientName == "neomutt" {
		// Seen with Debian 12's NeoMutt 20220429 and a 1.1 KB JWT: SMTP fails with
		// "OAUTH token is too big: 1024" (IMAP's limit was raised in 2021, neomutt#3138).
		b.WriteString("# NeoMutt releases before 2023 refuse OAuth tokens over 1024 bytes for SMTP (\"OAUTH token is too big\"): use a newer NeoMutt or mutt.\n")
	}
	fmt.Fprintf(b, "set from = %s\nset ssl_force_tls = yes\n", q(a.address))
	if a.caFile != "" {
		fmt.Fprintf(b, "set certificate_file = %s\n", q(a.caFile))
	}
	starttls := false
	if s := a.imap; s != nil {
		scheme := "imaps"
		if s.TLS != probe.TLSImplicit {
			scheme, starttls = "imap", true
		}
		fmt.Fprintf(b, "set imap_user = %s\nset folder = %s\nset spoolfile = \"+INBOX\"\n", q(a.user(s)), q(scheme+"://"+s.Address()+"/"))
		fmt.Fprintf(b, "set imap_authenticators = \"oauthbearer\"\nset imap_oauth_refresh_command = %s\n", q(a.tokenCommand))
	} else if s := a.pop3; s != nil {
		scheme := "pops"
		if s.TLS != probe.TLSImplicit {
			scheme, starttls = "pop", true
		}
		fmt.Fprintf(b, "set pop_user = %s\nset folder = %s\nset spoolfile = %s\n", q(a.user(s)), q(scheme+"://"+s.Address()+"/"), q(scheme+"://"+s.Address()+"/"))
		fmt.Fprintf(b, "set pop_authenticators = \"oauthbearer\"\nset pop_oauth_refresh_command = %s\n", q(a.tokenCommand))
	}
	if s := a.smtp; s != nil {
		scheme := "smtps"
		if s.TLS != probe.TLSImplicit {
			scheme, starttls = "smtp", true
		}
		fmt.Fprintf(b, "set smtp_url = %s\n", q(scheme+"://"+url.User(a.user(s)).String()+"@"+s.Address()+"/"))
		fmt.Fprintf(b, "set smtp_authenticators = \"oauthbearer\"\nset smtp_oauth_refresh_command = %s\n", q(a.tokenCommand))
	}
	if starttls {
		b.WriteString("set ssl_starttls = yes\n")
	}
	return nil
}

func (a *mailAccount) mbsync(b *strings.Builder) error {
	s := a.imap
	if s == nil {
		return fmt.Errorf("login: %s has no IMAP server with OAuth to configure mbsync for", a.address)
	}
	n := a.name()
	fmt.Fprintf(b, "# mbsync (isync 1.5) configuration for %s, from `saslgate login --print-config mbsync`: put it in ~/.mbsyncrc\n", a.address)
	b.WriteString("# mbsync authenticates through Cyrus SASL: XOAUTH2 needs the cyrus-sasl-xoauth2 plugin.\n")
	fmt.Fprintf(b, "IMAPAccount %s\nHost %s\nPort %d\nUser %s\nPassCmd %s\nAuthMechs XOAUTH2\n", n, s.Host, s.Port, a.user(s), dquote(a.tokenCommand, `\"`))
	if s.TLS == probe.TLSImplicit {
		b.WriteString("TLSType IMAPS\n")
	} else {
		b.WriteString("TLSType STARTTLS\n")
	}
	if a.caFile != "" {
		fmt.Fprintf(b, "CertificateFile %s\n", a.caFile)
	}
	fmt.Fprintf(b, "\nIMAPStore %[1]s-remote\nAccount %[1]s\n\nMaildirStore %[1]s-local\nPath ~/Mail/%[1]s/\nInbox ~/Mail/%[1]s/INBOX\nSubFolders Verbatim\n", n)
	fmt.Fprintf(b, "\nChannel %[1]s\nFar :%[1]s-remote:\nNear :%[1]s-local:\nPatterns *\nCreate Near\nSyncState *\n", n)
	return nil
}

func (a *mailAccount) curl(b *strings.Builder) error {
	if a.imap == nil && a.pop3 == nil && a.smtp == nil {
		return fmt.Errorf("login: %s has no IMAP, POP3 or SMTP server with OAuth to use curl with", a.address)
	}
	common := ""
	if a.caFile != "" {
		common = " --cacert " + shellQuote(a.caFile)
	}
	token := `--oauth2-bearer "$(` + a.tokenCommand + `)"`
	fmt.Fprintf(b, "# curl commands for %s, from `saslgate login --print-config curl`\n", a.address)
	for _, k := range []struct {
		s                 *maildiscover.Server
		what, tls, nontls string
	}{{a.imap, "list the mailboxes (IMAP)", "imaps", "imap"}, {a.pop3, "list the messages (POP3)", "pop3s", "pop3"}} {
		if k.s == nil {
			continue
		}
		u, extra := k.tls+"://"+k.s.Address()+"/", ""
		if k.s.TLS != probe.TLSImplicit {
			u, extra = k.nontls+"://"+k.s.Address()+"/", " --ssl-reqd"
		}
		fmt.Fprintf(b, "# %s\ncurl%s%s --user %s %s %s\n", k.what, common, extra, shellQuote(a.user(k.s)+":"), token, shellQuote(u))
	}
	if s := a.smtp; s != nil {
		u, extra := "smtps://"+s.Address(), ""
		if s.TLS != probe.TLSImplicit {
			u, extra = "smtp://"+s.Address(), " --ssl-reqd"
		}
		fmt.Fprintf(b, "# send message.eml (SMTP submission) to RECIPIENT\ncurl%s%s --user %s %s --mail-from %s --mail-rcpt RECIPIENT --upload-file message.eml %s\n",
			common, extra, shellQuote(a.user(s)+":"), token, shellQuote(a.address), shellQuote(u))
	}
	return nil
}

// thunderbird prints an autoconfig document for Thunderbird's isp directory. Thunderbird
// runs no token command: it signs in itself, with the client ID it carries or the one named.
func (a *mailAccount) thunderbird(b *strings.Builder) error {
	_, domain, _ := strings.Cut(a.address, "@")
	x := func(s string) string {
		var e strings.Builder
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	fmt.Fprintf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
	fmt.Fprintf(b, "<!-- Thunderbird configuration for %s, from `saslgate login --print-config thunderbird`.\n", x(a.address))
	fmt.Fprintf(b, "     Save it as isp/%s.xml in Thunderbird's installation directory and add the account.\n", x(domain))
	b.WriteString("     Thunderbird signs in itself (it runs no token command): the issuer must accept Thunderbird's\n")
	b.WriteString("     own client, or the site must name one for it in clientID. -->\n")
	fmt.Fprintf(b, "<clientConfig version=\"1.1\">\n  <emailProvider id=\"%s\">\n    <domain>%s</domain>\n    <displayName>%s</displayName>\n", x(domain), x(domain), x(domain))
	for _, s := range []*maildiscover.Server{a.imap, a.pop3, a.smtp} {
		if s == nil {
			continue
		}
		elem := "incomingServer"
		if s.Type == maildiscover.TypeSMTP {
			elem = "outgoingServer"
		}
		socket := map[string]string{probe.TLSImplicit: "SSL", probe.TLSStartTLS: "STARTTLS"}[s.TLS]
		fmt.Fprintf(b, "    <%s type=\"%s\">\n      <hostname>%s</hostname>\n      <port>%d</port>\n      <socketType>%s</socketType>\n      <authentication>OAuth2</authentication>\n      <username>%s</username>\n    </%s>\n",
			elem, s.Type, x(s.Host), s.Port, cmpOr(socket, "plain"), x(a.user(s)), elem)
	}
	b.WriteString("  </emailProvider>\n  <oAuth2>\n")
	fmt.Fprintf(b, "    <issuer>%s</issuer>\n    <scope>%s</scope>\n", x(a.issuer), x(a.scope))
	if a.authURL != "" {
		fmt.Fprintf(b, "    <authURL>%s</authURL>\n", x(a.authURL))
	}
	if a.tokenURL != "" {
		fmt.Fprintf(b, "    <tokenURL>%s</tokenURL>\n", x(a.tokenURL))
	}
	if a.clientID != "" {
		fmt.Fprintf(b, "    <clientID>%s</clientID>\n", x(a.clientID))
	}
	b.WriteString("  </oAuth2>\n</clientConfig>\n")
	return nil
}

var (
	shellSafe    = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)
	unsafeInName = regexp.MustCompile(`[^A-Za-z0-9@._-]`)
)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dquote puts s in double quotes, backslash-escaping the characters in special.
func dquote(s, special string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if strings.ContainsRune(special, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
