package oauthlogin

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/oauth2"

	"github.com/saslgate/saslgate/internal/idpmeta"
)

// Flows.
const (
	FlowDevice = "device" // RFC 8628
	FlowCode   = "code"   // authorization code + PKCE on a loopback redirect
)

// DefaultMinValidity is how long a stored access token must still be valid to be printed
// again instead of refreshed.
const DefaultMinValidity = 5 * time.Minute

// ErrLoginRequired is wrapped when there is no usable refresh token and the login may not
// ask the user (Login.NonInteractive).
var ErrLoginRequired = errors.New("oauthlogin: no usable refresh token; run `saslgate login` interactively")

// Login gets access tokens for one user from one issuer and client.
type Login struct {
	Issuer string
	// DiscoveryURL is where the issuer's metadata is read; by default RFC 8414 §3.1's URL,
	// then OpenID Connect Discovery 1.0 §4's.
	DiscoveryURL string
	// ClientID is the client configured at the issuer. Without one the client registered
	// earlier for this token file is used, or a native public client is registered now (RFC
	// 7591) when the issuer offers a registration_endpoint.
	ClientID     string
	ClientSecret string // for confidential clients; "" for public ones
	// ClientName is the client_name a registration asks for (default "saslgate login").
	ClientName string
	// AuthURL and TokenURL, when set, stand in for the issuer's metadata when that cannot be
	// read (the autoconfig oAuth2 element's authURL and tokenURL, which with a client ID let a
	// client skip metadata).
	AuthURL, TokenURL string
	Scopes            []string
	// Resource is sent as the RFC 8707 resource indicator when set (e.g. to get a JWT access
	// token for saslgate from providers that issue tokens per resource).
	Resource string
	// Flow is FlowDevice, FlowCode, or "": the device grant where the issuer offers it (and a
	// registered client has it), else the code flow.
	Flow string
	// File keeps the refresh token (and the last access token). Created with mode 0600;
	// refused if group or others can access it. Written only when a token was obtained.
	File string
	// RegistrationFile keeps the client registered at the issuer (default
	// RegistrationFile(File)), mode 0600 too.
	RegistrationFile string
	// MinValidity: a stored access token valid for less than this is refreshed (default
	// DefaultMinValidity).
	MinValidity time.Duration
	// NonInteractive fails with ErrLoginRequired instead of starting a flow that needs the
	// user.
	NonInteractive bool
	// HTTPClient talks to the issuer (default http.DefaultClient).
	HTTPClient *http.Client
	// Prompt receives what the user must do (the verification URI and code, or the URL to
	// open) and what was done on the way (a registration); normally standard error.
	Prompt io.Writer
	// RedirectAddress is the loopback address the code flow listens on (default
	// "127.0.0.1:0", any free port: RFC 8252 §7.3).
	RedirectAddress string
	// RedirectPath is the path of the loopback redirect URI of a configured client (default
	// "/cb"; a registered client uses the path it registered).
	RedirectPath string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// client is the OAuth client a sign-in uses.
type client struct {
	id, secret string
	reg        *Registration // set for a client this tool registered
	replaced   bool          // reg replaces a registration the issuer forgot
}

// AccessToken returns an access token: the stored one while it stays valid for MinValidity,
// else one from the stored refresh token, else one from a new interactive grant. The state
// file is written only when a token is obtained.
func (l *Login) AccessToken(ctx context.Context) (string, error) {
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.MinValidity == 0 {
		l.MinValidity = DefaultMinValidity
	}
	if l.HTTPClient == nil {
		l.HTTPClient = http.DefaultClient
	}
	if l.Prompt == nil {
		l.Prompt = io.Discard
	}
	if l.RegistrationFile == "" {
		l.RegistrationFile = RegistrationFile(l.File)
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, l.HTTPClient)

	st, err := Load(l.File)
	if err != nil && !errors.Is(err, ErrNoState) {
		return "", err
	}
	reg, err := l.loadRegistration()
	if err != nil {
		return "", err
	}
	c := client{id: l.ClientID, secret: l.ClientSecret}
	if reg != nil && (c.id == "" || c.id == reg.ClientID) {
		c = client{id: reg.ClientID, secret: cmpStr(l.ClientSecret, reg.ClientSecret), reg: reg}
	}
	if st != nil && (st.Issuer != l.Issuer || c.id == "" || st.ClientID != c.id || st.Resource != l.Resource) {
		// Another issuer, client or resource: its tokens are not what was asked for.
		st = nil
	}
	if st != nil && st.AccessToken != "" && st.Expiry.Sub(l.Now()) > l.MinValidity {
		return st.AccessToken, nil
	}
	forgotten := false
	if st != nil && st.RefreshToken != "" && st.TokenURL != "" {
		tok, err := l.config(c, st.TokenURL, "", "").TokenSource(ctx, &oauth2.Token{RefreshToken: st.RefreshToken}).Token()
		if err == nil {
			return l.save(c, st.TokenURL, tok, st.RefreshToken)
		}
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
			fmt.Fprintf(l.Prompt, "saslgate login: the refresh token was refused (%s); signing in again\n", re.ErrorCode)
		case errors.As(err, &re) && re.ErrorCode == "invalid_client" && c.reg != nil:
			fmt.Fprintf(l.Prompt, "saslgate login: the issuer no longer knows the registered client %s (invalid_client); registering a new one\n", c.id)
			forgotten = true
		default:
			// Not a verdict on the refresh token (issuer down): keep it and say so.
			return "", fmt.Errorf("oauthlogin: refreshing the token: %w", err)
		}
	}
	if l.NonInteractive {
		return "", ErrLoginRequired
	}
	meta, err := l.metadata(ctx)
	if err != nil {
		return "", err
	}
	flow := l.Flow
	if flow == "" {
		flow = FlowCode
		if meta.DeviceAuthorizationEndpoint != "" && (c.reg == nil || forgotten || c.reg.grants(grantDeviceCode)) {
			flow = FlowDevice
		}
	}
	if flow != FlowDevice && flow != FlowCode {
		return "", fmt.Errorf("oauthlogin: unknown flow %q (want %s or %s)", flow, FlowDevice, FlowCode)
	}
	var ln net.Listener
	if flow == FlowCode {
		if ln, err = l.listen(c.reg); err != nil {
			return "", err
		}
		defer ln.Close()
	}
	if c, err = l.client(ctx, meta, c, forgotten, flow, ln); err != nil {
		return "", err
	}
	tok, err := l.grant(ctx, meta, c, flow, ln)
	var re *oauth2.RetrieveError
	if err != nil && flow == FlowDevice && c.reg != nil && !c.replaced && errors.As(err, &re) && re.ErrorCode == "invalid_client" {
		// RFC 8628 §3.1: the device authorization request is where an unknown client shows.
		fmt.Fprintf(l.Prompt, "saslgate login: the issuer no longer knows the registered client %s (invalid_client); registering a new one\n", c.id)
		if c, err = l.client(ctx, meta, c, true, flow, nil); err != nil {
			return "", err
		}
		tok, err = l.grant(ctx, meta, c, flow, nil)
	}
	if err != nil {
		return "", err
	}
	return l.save(c, meta.TokenEndpoint, tok, "")
}

// loadRegistration returns the stored registration for l.Issuer, nil when there is none.
func (l *Login) loadRegistration() (*Registration, error) {
	r, err := LoadRegistration(l.RegistrationFile)
	switch {
	case errors.Is(err, ErrNoState):
		return nil, nil
	case err != nil:
		return nil, err
	case r.Issuer != l.Issuer || r.ClientID == "":
		return nil, nil
	}
	return r, nil
}

// client returns the client to sign in with: the configured one; else the stored
// registration, while the issuer knows it; else a new registration (RFC 7591), saved before
// any sign-in so that a failed one does not cost another.
func (l *Login) client(ctx context.Context, meta *idpmeta.Metadata, c client, forget bool, flow string, ln net.Listener) (client, error) {
	if c.id != "" && c.reg == nil {
		return c, nil
	}
	if c.reg != nil && !forget {
		switch {
		case c.reg.expired(l.Now()):
			fmt.Fprintf(l.Prompt, "saslgate login: the secret of the registered client %s has expired; registering a new one\n", c.id)
		case !l.known(ctx, c.reg):
			fmt.Fprintf(l.Prompt, "saslgate login: the issuer no longer knows the registered client %s (RFC 7592 read refused); registering a new one\n", c.id)
		default:
			return c, nil
		}
		forget = true
	}
	if meta.RegistrationEndpoint == "" {
		return c, fmt.Errorf("%w: %s publishes no registration_endpoint (RFC 7591) in its metadata; register a public client for mail clients there (redirect URI http://127.0.0.1%s, PKCE, no secret) and pass its ID with --client-id, or have the site's autoconfig document name it (oAuth2 clientID)",
			ErrNoRegistration, l.Issuer, RegisteredRedirectPath)
	}
	port := ""
	if ln != nil {
		port = portOf(ln.Addr().String())
	}
	reg, err := l.register(ctx, meta.RegistrationEndpoint, meta.DeviceAuthorizationEndpoint != "", port)
	if err != nil {
		return c, err
	}
	if err := reg.Save(l.RegistrationFile); err != nil {
		return c, err
	}
	fmt.Fprintf(l.Prompt, "saslgate login: registered the client %s at %s (RFC 7591); kept in %s\n", reg.ClientID, meta.RegistrationEndpoint, l.RegistrationFile)
	return client{id: reg.ClientID, secret: reg.ClientSecret, reg: reg, replaced: forget || c.replaced}, nil
}

// metadata reads the issuer's metadata: at DiscoveryURL when set, else at RFC 8414's URL and
// then at OpenID Connect Discovery's. Without any, AuthURL and TokenURL stand in when set.
func (l *Login) metadata(ctx context.Context) (*idpmeta.Metadata, error) {
	urls := []string{l.DiscoveryURL}
	if l.DiscoveryURL == "" {
		urls = []string{idpmeta.AuthorizationServerURL(l.Issuer), idpmeta.DiscoveryURL(l.Issuer)}
	}
	var errs []error
	for _, u := range urls {
		m, err := idpmeta.Fetch(ctx, l.HTTPClient, u, l.Issuer)
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
	}
	if l.TokenURL != "" && l.AuthURL != "" {
		fmt.Fprintf(l.Prompt, "saslgate login: no metadata of %s (%v); using the authorization and token endpoints of the autoconfig document\n", l.Issuer, errors.Join(errs...))
		return &idpmeta.Metadata{Issuer: l.Issuer, AuthorizationEndpoint: l.AuthURL, TokenEndpoint: l.TokenURL}, nil
	}
	return nil, fmt.Errorf("oauthlogin: reading the metadata of %s: %w", l.Issuer, errors.Join(errs...))
}

func (l *Login) grant(ctx context.Context, meta *idpmeta.Metadata, c client, flow string, ln net.Listener) (*oauth2.Token, error) {
	if flow == FlowDevice {
		return l.device(ctx, meta, c)
	}
	if ln == nil {
		var err error
		if ln, err = l.listen(c.reg); err != nil {
			return nil, err
		}
		defer ln.Close()
	}
	return l.code(ctx, meta, c, ln)
}

func (l *Login) config(c client, tokenURL, authURL, deviceURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.id,
		ClientSecret: c.secret,
		Scopes:       l.Scopes,
		Endpoint:     oauth2.Endpoint{TokenURL: tokenURL, AuthURL: authURL, DeviceAuthURL: deviceURL},
	}
}

func (l *Login) resourceOpts() []oauth2.AuthCodeOption {
	if l.Resource == "" {
		return nil
	}
	return []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("resource", l.Resource)}
}

// targetHint explains an RFC 8707 invalid_target refusal.
func (l *Login) targetHint(code string) string {
	if code != "invalid_target" || l.Resource == "" {
		return ""
	}
	return fmt.Sprintf(" (the issuer does not issue tokens for the resource %s, RFC 8707: pass the gateway's http.resource with --resource, or --resource none)", l.Resource)
}

// save stores tok (keeping oldRefresh when the issuer did not rotate it) and returns its
// access token.
func (l *Login) save(c client, tokenURL string, tok *oauth2.Token, oldRefresh string) (string, error) {
	if tok.AccessToken == "" {
		return "", errors.New("oauthlogin: the issuer returned no access token")
	}
	st := &State{
		Issuer: l.Issuer, ClientID: c.id, TokenURL: tokenURL, Scopes: l.Scopes, Resource: l.Resource,
		AccessToken: tok.AccessToken, Expiry: tok.Expiry, RefreshToken: tok.RefreshToken,
	}
	if st.RefreshToken == "" {
		st.RefreshToken = oldRefresh
	}
	if st.RefreshToken == "" {
		fmt.Fprintln(l.Prompt, "saslgate login: the issuer returned no refresh token (ask for the offline_access scope?); the next call after expiry signs in again")
	}
	if err := st.Save(l.File); err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// device runs the device authorization grant: RFC 8628 §3.1 request, §3.3 user instructions,
// §3.4 polling (x/oauth2 handles authorization_pending and slow_down).
func (l *Login) device(ctx context.Context, meta *idpmeta.Metadata, c client) (*oauth2.Token, error) {
	if meta.DeviceAuthorizationEndpoint == "" {
		return nil, fmt.Errorf("oauthlogin: %s offers no device_authorization_endpoint (use --flow code)", l.Issuer)
	}
	if c.reg != nil && !c.reg.grants(grantDeviceCode) {
		return nil, fmt.Errorf("oauthlogin: the registered client %s may not use the device grant (use --flow code)", c.id)
	}
	conf := l.config(c, meta.TokenEndpoint, "", meta.DeviceAuthorizationEndpoint)
	da, err := conf.DeviceAuth(ctx, l.resourceOpts()...)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("oauthlogin: device authorization request: %w%s", err, l.targetHint(re.ErrorCode))
		}
		return nil, fmt.Errorf("oauthlogin: device authorization request: %w", err)
	}
	fmt.Fprintf(l.Prompt, "To sign in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(l.Prompt, "or open %s\n", da.VerificationURIComplete)
	}
	fmt.Fprintln(l.Prompt, "Waiting for the sign-in to complete...")
	tok, err := conf.DeviceAccessToken(ctx, da, l.resourceOpts()...)
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: device grant: %w", err)
	}
	return tok, nil
}

// listen opens the loopback listener of the code flow: RedirectAddress, else the port a
// registered redirect URI names when it is free, else any free port (RFC 8252 §7.3).
func (l *Login) listen(reg *Registration) (net.Listener, error) {
	if l.RedirectAddress == "" && reg != nil {
		if p := reg.registeredPort(); p != "" {
			if ln, err := net.Listen("tcp", "127.0.0.1:"+p); err == nil {
				return ln, nil
			}
		}
	}
	ln, err := net.Listen("tcp", cmpStr(l.RedirectAddress, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: redirect listener: %w", err)
	}
	return ln, nil
}

// code runs the authorization code grant with PKCE S256, receiving the code on a loopback
// HTTP listener (RFC 8252 §7.3), checking state (RFC 6749 §10.12) and the issuer of the
// response (RFC 9207 §2.4).
func (l *Login) code(ctx context.Context, meta *idpmeta.Metadata, c client, ln net.Listener) (*oauth2.Token, error) {
	if meta.AuthorizationEndpoint == "" {
		return nil, fmt.Errorf("oauthlogin: %s offers no authorization_endpoint", l.Issuer)
	}
	path := cmpStr(l.RedirectPath, "/cb")
	if c.reg != nil {
		p, ok := c.reg.redirectURI(portOf(ln.Addr().String()))
		if !ok {
			return nil, fmt.Errorf("oauthlogin: the registered client %s has no loopback redirect URI http://127.0.0.1/…", c.id)
		}
		path = cmpStr(p, "/")
	}
	conf := l.config(c, meta.TokenEndpoint, meta.AuthorizationEndpoint, "")
	conf.RedirectURL = "http://" + ln.Addr().String() + path
	verifier := oauth2.GenerateVerifier()
	state := randomString()
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}, l.resourceOpts()...)
	fmt.Fprintf(l.Prompt, "To sign in, open this URL in a browser on this machine:\n%s\n", conf.AuthCodeURL(state, opts...))

	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var res result
		iss, hasIss := q.Get("iss"), q.Has("iss")
		switch {
		case q.Get("state") != state:
			http.Error(w, "state does not match this login", http.StatusBadRequest)
			return // not ours: keep waiting
		// RFC 9207 §2.4: the issuer of the response, error responses included, must be the
		// issuer the request went to; a missing one only where the issuer promises it.
		case hasIss && iss != meta.Issuer:
			res.err = fmt.Errorf("oauthlogin: the authorization response comes from issuer %q, not %q (RFC 9207: a mix-up attack, or a misconfigured issuer); the code was not redeemed", iss, meta.Issuer)
		case !hasIss && meta.AuthorizationResponseIssParameterSupported:
			res.err = fmt.Errorf("oauthlogin: the authorization response has no iss although %s promises one (authorization_response_iss_parameter_supported, RFC 9207 §2.4); the code was not redeemed", meta.Issuer)
		case q.Get("error") != "":
			res.err = fmt.Errorf("oauthlogin: authorization refused: %s %s%s", q.Get("error"), q.Get("error_description"), l.targetHint(q.Get("error")))
		case q.Get("code") == "":
			res.err = errors.New("oauthlogin: the redirect carries no code")
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			fmt.Fprintf(w, "<p>Sign-in failed: %s</p>", html.EscapeString(res.err.Error()))
		} else {
			fmt.Fprint(w, "<p>Signed in. You can close this window.</p>")
		}
		// The page goes out before the listener can be shut down.
		http.NewResponseController(w).Flush()
		select {
		case got <- res:
		default:
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() {
		// Let the handler finish the browser's page; then close what stays open.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}()

	var res result
	select {
	case res = <-got:
	case <-ctx.Done():
		return nil, fmt.Errorf("oauthlogin: waiting for the browser: %w", ctx.Err())
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := conf.Exchange(ctx, res.code, append([]oauth2.AuthCodeOption{oauth2.VerifierOption(verifier)}, l.resourceOpts()...)...)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_client" && c.reg != nil {
			// Useless now: the next call registers anew.
			_ = os.Remove(l.RegistrationFile)
			return nil, fmt.Errorf("oauthlogin: redeeming the code: the issuer no longer knows the registered client %s: %w; run saslgate login again to register a new one", c.id, err)
		}
		return nil, fmt.Errorf("oauthlogin: redeeming the code: %w", err)
	}
	return tok, nil
}

func randomString() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
