package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/idpmeta"
	"github.com/saslgate/saslgate/internal/probe"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy/discovery"
	"github.com/saslgate/saslgate/tls/certs"
)

// errChecksFailed makes run exit 1 after the report said what failed.
type errChecksFailed struct{ failed, total int }

func (e errChecksFailed) Error() string {
	return fmt.Sprintf("%d of %d checks failed", e.failed, e.total)
}

// report prints one line per check: "OK   what  detail" or "FAIL what  reason".
type report struct {
	w             io.Writer
	total, failed int
}

func (r *report) ok(what, format string, args ...any) {
	r.total++
	fmt.Fprintf(r.w, "OK   %-9s %s\n", what, fmt.Sprintf(format, args...))
}

func (r *report) fail(what string, err error) {
	r.total++
	r.failed++
	// Multi-line errors (every config problem) are indented under their check.
	msg := strings.ReplaceAll(err.Error(), "\n", "\n               ")
	fmt.Fprintf(r.w, "FAIL %-9s %s\n", what, msg)
}

// skip prints a check that was not run and why: "SKIP what  reason"; it counts as neither.
func (r *report) skip(what, format string, args ...any) {
	fmt.Fprintf(r.w, "SKIP %-9s %s\n", what, fmt.Sprintf(format, args...))
}

func (r *report) check(what string, err error, format string, args ...any) bool {
	if err != nil {
		r.fail(what, err)
		return false
	}
	r.ok(what, format, args...)
	return true
}

func (r *report) result() error {
	if r.failed > 0 {
		return errChecksFailed{r.failed, r.total}
	}
	fmt.Fprintf(r.w, "all %d checks passed\n", r.total)
	return nil
}

// backendCheck is one backend to reach: a member of a pool.
type backendCheck struct {
	// protocol is the registered protocol's name, which is also the probe's name for it
	// (probe.IMAP, probe.POP3, probe.SMTP, probe.Sieve). What is checked of a backend (which
	// AUTH it must offer, how to log in) stays keyed on the probe's names here until
	// backends own their per-protocol checks (issue 16); a protocol the probe does not speak
	// fails its check.
	protocol string
	pool     string
	cfg      backends.Config
}

// configuredBackends are the members of the pools of the protocols the listeners serve.
func configuredBackends(cfg *fileConfig) []backendCheck {
	var out []backendCheck
	for _, pc := range cfg.poolConfigs() {
		for _, m := range pc.Members {
			out = append(out, backendCheck{pc.Protocol, pc.Name, pc.Member(m)})
		}
	}
	return out
}

// checkCmd validates the configuration and reaches everything it names, like `nginx -t`.
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/saslgate/saslgate.yaml", "configuration `file`")
	user := fs.String("user", "", "also log in to each backend as `USER` (with that user's secret, or through the master user; not with login token)")
	timeout := fs.Duration("timeout", 15*time.Second, "bound for each network check")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: saslgate check --config FILE [--user USER]\n\nValidates the configuration, fetches each issuer's metadata and keys, connects to each\nbackend (TLS verified) and, with --user, logs in as that user. One line per check; exit 1 if any failed.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("check: unexpected argument %q", fs.Arg(0))
	}
	r := &report{w: stdout}
	cfg, err := loadConfig(*path)
	if !r.check("config", err, "%s", *path) {
		return r.result()
	}

	store, err := certs.Load(cfg.TLS, nil)
	if err == nil {
		err = checkCertificate(store)
	}
	r.check("tls", err, "%s", describeCertificate(store))

	for _, ic := range cfg.Tokens.Issuers {
		checkIssuer(ctx, r, ic, *timeout)
	}

	var secrets backends.SecretSource = noSecrets{}
	secretsOK := true
	if cfg.hasSecrets() {
		secrets, err = backends.NewSecretSource(cfg.Secrets, nil)
		secretsOK = r.check("secrets", err, "source %s", cfg.Secrets.Source)
	}

	up := map[string]bool{} // members that answered, by address and protocol
	for _, b := range configuredBackends(cfg) {
		if b.cfg.MasterSecretFile != "" {
			if _, err := b.cfg.MasterSecret(); err != nil {
				r.fail("master", fmt.Errorf("%s backend %s: %w", b.protocol, b.cfg.Address, err))
			} else {
				r.ok("master", "%s backend %s: master user %s, secret read from %s", b.protocol, b.cfg.Address, b.cfg.MasterUser, b.cfg.MasterSecretFile)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		detail, err := checkBackend(cctx, b)
		cancel()
		if r.check("backend", err, "%s", detail) {
			up[b.protocol+" "+b.cfg.Address] = true
		}
	}
	if *user != "" {
		checkUserRoutes(ctx, r, cfg, secrets, secretsOK, up, *user, *timeout)
	}

	if cfg.HTTP.Enabled() {
		h, err := discovery.New(cfg.HTTP, cfg.Listeners, protocols, cfg.Tokens.Issuers, nil, nil)
		if err == nil {
			r.ok("http", "%s announces %s", cfg.HTTP.Address, h)
		} else {
			r.fail("http", err)
		}
	}
	return r.result()
}

func checkCertificate(s *certs.Store) error {
	c := s.Certificate()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return err
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return fmt.Errorf("certificate %q expired at %s", leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))
	} else if now.Before(leaf.NotBefore) {
		return fmt.Errorf("certificate %q is not valid before %s", leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func describeCertificate(s *certs.Store) string {
	if s == nil {
		return ""
	}
	leaf, err := x509.ParseCertificate(s.Certificate().Certificate[0])
	if err != nil {
		return ""
	}
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return fmt.Sprintf("certificate for %s, valid until %s", strings.Join(names, ", "), leaf.NotAfter.UTC().Format("2006-01-02"))
}

// checkIssuer fetches the issuer's metadata and, in mode jwt, its keys; in the other modes it
// checks that the endpoint is known.
func checkIssuer(ctx context.Context, r *report, ic introspect.IssuerConfig, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := introspect.NewHTTPClient(ic)
	if err != nil {
		r.fail("issuer", fmt.Errorf("%s: %w", ic.Issuer, err))
		return
	}
	meta, err := idpmeta.Fetch(ctx, client, discoveryURL(ic), ic.Issuer)
	if !r.check("issuer", err, "%s: metadata at %s", ic.Issuer, discoveryURL(ic)) {
		return
	}
	switch ic.Mode {
	case "", "jwt":
		if meta.JWKSURI == "" {
			r.fail("keys", fmt.Errorf("%s: the metadata has no jwks_uri", ic.Issuer))
			return
		}
		keys, err := idpmeta.FetchKeys(ctx, client, meta.JWKSURI)
		if err != nil {
			r.fail("keys", err)
			return
		}
		algs := ic.Algorithms
		if len(algs) == 0 {
			algs = introspect.DefaultAlgorithms
		}
		var usable []string
		for _, k := range keys {
			if k.Algorithm == "" || slices.Contains(algs, k.Algorithm) {
				usable = append(usable, fmt.Sprintf("%s kid=%s", cmpOr(k.Algorithm, "any alg"), k.KeyID))
			}
		}
		if len(usable) == 0 {
			r.fail("keys", fmt.Errorf("%s: none of the %d keys at %s is for an accepted algorithm (%s)", ic.Issuer, len(keys), meta.JWKSURI, strings.Join(algs, ", ")))
			return
		}
		r.ok("keys", "%s: %d signing key(s) at %s: %s", ic.Issuer, len(usable), meta.JWKSURI, strings.Join(usable, "; "))
	case "introspection":
		ep := cmpOr(ic.IntrospectionEndpoint, meta.IntrospectionEndpoint)
		if ep == "" {
			r.fail("endpoint", fmt.Errorf("%s: no introspection_endpoint configured or in the metadata", ic.Issuer))
			return
		}
		r.ok("endpoint", "%s: introspection at %s", ic.Issuer, ep)
	case "userinfo":
		ep := cmpOr(ic.UserinfoEndpoint, meta.UserinfoEndpoint)
		if ep == "" {
			r.fail("endpoint", fmt.Errorf("%s: no userinfo_endpoint configured or in the metadata", ic.Issuer))
			return
		}
		r.ok("endpoint", "%s: userinfo at %s", ic.Issuer, ep)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkBackend connects to the backend as saslgate would (TLS verified), reads its greeting
// and capabilities, and checks that the configured login method is offered.
func checkBackend(ctx context.Context, b backendCheck) (string, error) {
	tc, err := b.cfg.TLSConfig()
	if err != nil {
		return "", fmt.Errorf("%s backend %s: %w", b.protocol, b.cfg.Address, err)
	}
	res, err := probe.Run(ctx, probe.Options{
		Target:    probe.Target{Protocol: b.protocol, TLS: b.cfg.TLS, Address: b.cfg.Address},
		TLSConfig: tc,
		EHLOName:  b.cfg.Hostname,
	})
	if err != nil {
		return "", fmt.Errorf("%s backend %s: %w", b.protocol, b.cfg.Address, err)
	}
	login := cmpOr(b.cfg.Login, backends.LoginPlain)
	mech := strings.ToUpper(cmpOr(b.cfg.TokenMechanism, backends.TokenOAuthBearer))
	if missing := missingForLogin(b.protocol, login, mech, res.Capabilities); missing != "" {
		return "", fmt.Errorf("%s backend %s does not offer %s, needed for login: %s", b.protocol, b.cfg.Address, missing, login)
	}
	tlsNote := "no TLS"
	if res.TLS != nil {
		tlsNote = fmt.Sprintf("%s, certificate verified for %s", tls.VersionName(res.TLS.Version), tc.ServerName)
		if tc.InsecureSkipVerify {
			tlsNote = tls.VersionName(res.TLS.Version) + ", certificate NOT verified (insecure_skip_verify)"
		}
	}
	return fmt.Sprintf("%s backend %s (tls %s): %s; offers login %s", b.protocol, b.cfg.Address, b.cfg.TLS, tlsNote, login), nil
}

// missingForLogin is what a backend of protocol, with the capabilities the probe read, lacks
// for login (with tokenMech, upper case, for login token), or "" when it offers what the
// backend dialer sends (backends.DialIMAP, DialPOP3, DialSMTP, DialSieve).
func missingForLogin(protocol, login, tokenMech string, caps []string) string {
	token := login == backends.LoginToken
	// PLAIN is the mechanism of the plain and master logins everywhere, and of
	// master_separator where it is not the LOGIN command or USER and PASS.
	plain := login == backends.LoginPlain || login == backends.LoginMaster
	userPass := login == backends.LoginLogin || login == backends.LoginMasterSeparator
	switch protocol {
	case probe.IMAP:
		switch {
		case token && !hasWord(caps, "AUTH="+tokenMech):
			return "AUTH=" + tokenMech
		case plain && !hasWord(caps, "AUTH=PLAIN"):
			return "AUTH=PLAIN"
		case userPass && hasWord(caps, "LOGINDISABLED"):
			return "LOGIN (it advertises LOGINDISABLED)"
		}
	case probe.SMTP:
		switch {
		case token && !lineOffers(caps, "AUTH", tokenMech):
			return "AUTH " + tokenMech
		case (plain || login == backends.LoginMasterSeparator) && !lineOffers(caps, "AUTH", "PLAIN"):
			return "AUTH PLAIN"
		case login == backends.LoginLogin && !lineOffers(caps, "AUTH", "LOGIN"):
			return "AUTH LOGIN"
		case login == backends.LoginXClient && !lineOffers(caps, "XCLIENT", "LOGIN"):
			return "XCLIENT LOGIN (is saslgate in smtpd_authorized_xclient_hosts?)"
		}
	case probe.POP3:
		switch {
		case token && !lineOffers(caps, "SASL", tokenMech):
			return "SASL " + tokenMech + " in CAPA"
		case plain && !lineOffers(caps, "SASL", "PLAIN"):
			return "SASL PLAIN in CAPA"
		// RFC 2449 §6.2: a server with CAPA lists USER when it takes USER and PASS; one
		// without CAPA (caps nil) may still take them, and DialPOP3 tries.
		case userPass && caps != nil && !hasKeyword(caps, "USER"):
			return "USER in CAPA"
		}
	case probe.Sieve:
		switch {
		case token && !lineOffers(caps, "SASL", tokenMech):
			return "SASL " + tokenMech
		case login == backends.LoginLogin && !lineOffers(caps, "SASL", "LOGIN"):
			return "SASL LOGIN"
		case (plain || login == backends.LoginMasterSeparator) && !lineOffers(caps, "SASL", "PLAIN"):
			return "SASL PLAIN"
		}
	}
	return ""
}

// hasKeyword reports whether a line of lines starts with the keyword kw (any case).
func hasKeyword(lines []string, kw string) bool {
	return slices.ContainsFunc(lines, func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 0 && strings.EqualFold(f[0], kw)
	})
}

// loginDetail says what a login presents: the user's secret, or a master user's.
func loginDetail(cfg backends.Config) string {
	if cfg.MasterUser != "" {
		return fmt.Sprintf("through master user %s (login %s)", cfg.MasterUser, cfg.Login)
	}
	if !cfg.NeedsUserSecret() {
		return "without a secret (login " + cfg.Login + ")"
	}
	return "with the derived secret"
}

// checkUserRoutes follows user's route for each protocol the listeners serve, as a login
// would, and logs in there. Every member counts as up, so the route shows where the user's
// logins go; no login is tried on a member that failed its backend check above.
func checkUserRoutes(ctx context.Context, r *report, cfg *fileConfig, secrets backends.SecretSource, secretsOK bool, up map[string]bool, user string, timeout time.Duration) {
	router, err := newRouter(cfg, nil, nil)
	if !r.check("routes", err, "%d pool(s), %d route source(s)", len(cfg.poolConfigs()), len(cfg.Routes.Sources)) {
		return
	}
	defer router.Close()
	for _, p := range protocols {
		if !cfg.uses(p.Name) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		rt, err := router.Route(cctx, backends.Query{Protocol: p.Name, User: user, Mechanism: "OAUTHBEARER", Attempt: 1})
		cancel()
		if !r.check("route", err, "%s", describeRoute(p.Name, user, rt)) {
			continue
		}
		b := backendCheck{p.Name, rt.Pool.Name, rt.Config}
		switch {
		case !up[p.Name+" "+rt.Config.Address]:
			r.skip("login", "%s backend %s: not tried, it failed its check above", b.protocol, b.cfg.Address)
			continue
		case rt.Config.PassesToken():
			r.skip("login", "%s backend %s: login token logs in with the client's access token; log in through saslgate to test it", b.protocol, b.cfg.Address)
			continue
		case !secretsOK && rt.Config.NeedsUserSecret() && rt.Secret == "":
			continue
		}
		cctx, cancel = context.WithTimeout(ctx, timeout)
		err = backendLogin(cctx, b, secrets, rt)
		cancel()
		r.check("login", err, "%s backend %s accepts %s %s", b.protocol, b.cfg.Address, rt.User, loginDetail(b.cfg))
	}
}

// backendLogin logs in to b as the route's user, with the route's secret or the user's from
// secrets when b's login needs one.
func backendLogin(ctx context.Context, b backendCheck, secrets backends.SecretSource, rt backends.Route) error {
	user, secret := rt.User, rt.Secret
	if b.cfg.NeedsUserSecret() && secret == "" {
		var err error
		if secret, err = secrets.Secret(ctx, user); err != nil {
			return err
		}
	}
	switch b.protocol {
	case probe.IMAP:
		sess, err := backends.DialIMAP(ctx, b.cfg, user, secret, backends.Client{})
		if err != nil {
			return err
		}
		return sess.Close()
	case probe.SMTP:
		sess, err := backends.DialSMTP(ctx, b.cfg, user, secret, backends.Client{})
		if err != nil {
			return err
		}
		return sess.Close()
	case probe.POP3:
		sess, err := backends.DialPOP3(ctx, b.cfg, user, secret, backends.Client{})
		if err != nil {
			return err
		}
		return sess.Close()
	case probe.Sieve:
		sess, err := backends.DialSieve(ctx, b.cfg, user, secret, backends.Client{})
		if err != nil {
			return err
		}
		return sess.Close()
	}
	return errors.New("login check not implemented for " + b.protocol)
}

func hasWord(words []string, w string) bool {
	return slices.ContainsFunc(words, func(x string) bool { return strings.EqualFold(x, w) })
}

// lineOffers reports whether a keyword line, an EHLO line ("AUTH PLAIN LOGIN"), a POP3 CAPA
// line ("SASL PLAIN") or a ManageSieve capability as the probe gives it ("SASL PLAIN"), offers
// param.
func lineOffers(exts []string, keyword, param string) bool {
	for _, e := range exts {
		f := strings.Fields(e)
		if len(f) > 0 && strings.EqualFold(f[0], keyword) && hasWord(f[1:], param) {
			return true
		}
	}
	return false
}
