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
	Issuer       string
	DiscoveryURL string // default idpmeta.DiscoveryURL(Issuer)
	ClientID     string
	ClientSecret string // for confidential clients; "" for public ones
	Scopes       []string
	// Resource is sent as the RFC 8707 resource indicator when set (e.g. to get a JWT access
	// token for saslgate from providers that issue tokens per resource).
	Resource string
	Flow     string // FlowDevice (default) or FlowCode
	// File keeps the refresh token (and the last access token). Created with mode 0600;
	// refused if group or others can access it.
	File string
	// MinValidity: a stored access token valid for less than this is refreshed (default
	// DefaultMinValidity).
	MinValidity time.Duration
	// NonInteractive fails with ErrLoginRequired instead of starting a flow that needs the
	// user.
	NonInteractive bool
	// HTTPClient talks to the issuer (default http.DefaultClient).
	HTTPClient *http.Client
	// Prompt receives what the user must do (the verification URI and code, or the URL to
	// open); normally standard error.
	Prompt io.Writer
	// RedirectAddress is the loopback address the code flow listens on (default
	// "127.0.0.1:0", any free port: RFC 8252 §7.3).
	RedirectAddress string
	// RedirectPath is the path of the loopback redirect URI (default "/cb").
	RedirectPath string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// AccessToken returns an access token: the stored one while it stays valid for MinValidity,
// else one from the stored refresh token, else one from a new interactive grant. The state
// file is updated whenever a token is obtained.
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
	ctx = context.WithValue(ctx, oauth2.HTTPClient, l.HTTPClient)

	st, err := Load(l.File)
	if err != nil && !errors.Is(err, ErrNoState) {
		return "", err
	}
	if st != nil && (st.Issuer != l.Issuer || st.ClientID != l.ClientID) {
		// Another issuer or client: its tokens are not what was asked for.
		st = nil
	}
	if st != nil && st.AccessToken != "" && st.Expiry.Sub(l.Now()) > l.MinValidity {
		return st.AccessToken, nil
	}
	if st != nil && st.RefreshToken != "" && st.TokenURL != "" {
		tok, err := l.config(st.TokenURL, "", "").TokenSource(ctx, &oauth2.Token{RefreshToken: st.RefreshToken}).Token()
		if err == nil {
			return l.save(st.TokenURL, tok, st.RefreshToken)
		}
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			// Not a verdict on the refresh token (issuer down): keep it and say so.
			return "", fmt.Errorf("oauthlogin: refreshing the token: %w", err)
		}
		fmt.Fprintf(l.Prompt, "saslgate login: the refresh token was refused (%s); signing in again\n", re.ErrorCode)
	}
	if l.NonInteractive {
		return "", ErrLoginRequired
	}
	discovery := l.DiscoveryURL
	if discovery == "" {
		discovery = idpmeta.DiscoveryURL(l.Issuer)
	}
	meta, err := idpmeta.Fetch(ctx, l.HTTPClient, discovery, l.Issuer)
	if err != nil {
		return "", err
	}
	var tok *oauth2.Token
	switch l.Flow {
	case FlowDevice, "":
		tok, err = l.device(ctx, meta)
	case FlowCode:
		tok, err = l.code(ctx, meta)
	default:
		return "", fmt.Errorf("oauthlogin: unknown flow %q (want %s or %s)", l.Flow, FlowDevice, FlowCode)
	}
	if err != nil {
		return "", err
	}
	return l.save(meta.TokenEndpoint, tok, "")
}

func (l *Login) config(tokenURL, authURL, deviceURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     l.ClientID,
		ClientSecret: l.ClientSecret,
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

// save stores tok (keeping oldRefresh when the issuer did not rotate it) and returns its
// access token.
func (l *Login) save(tokenURL string, tok *oauth2.Token, oldRefresh string) (string, error) {
	if tok.AccessToken == "" {
		return "", errors.New("oauthlogin: the issuer returned no access token")
	}
	st := &State{
		Issuer: l.Issuer, ClientID: l.ClientID, TokenURL: tokenURL, Scopes: l.Scopes,
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
func (l *Login) device(ctx context.Context, meta *idpmeta.Metadata) (*oauth2.Token, error) {
	if meta.DeviceAuthorizationEndpoint == "" {
		return nil, fmt.Errorf("oauthlogin: %s offers no device_authorization_endpoint (use --flow code)", l.Issuer)
	}
	conf := l.config(meta.TokenEndpoint, "", meta.DeviceAuthorizationEndpoint)
	da, err := conf.DeviceAuth(ctx, l.resourceOpts()...)
	if err != nil {
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

// code runs the authorization code grant with PKCE S256, receiving the code on a loopback
// HTTP listener (RFC 8252 §7.3) and checking state (RFC 6749 §10.12).
func (l *Login) code(ctx context.Context, meta *idpmeta.Metadata) (*oauth2.Token, error) {
	if meta.AuthorizationEndpoint == "" {
		return nil, fmt.Errorf("oauthlogin: %s offers no authorization_endpoint", l.Issuer)
	}
	addr, path := l.RedirectAddress, l.RedirectPath
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if path == "" {
		path = "/cb"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oauthlogin: redirect listener: %w", err)
	}
	defer ln.Close()
	conf := l.config(meta.TokenEndpoint, meta.AuthorizationEndpoint, "")
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
		switch {
		case q.Get("state") != state:
			http.Error(w, "state does not match this login", http.StatusBadRequest)
			return // not ours: keep waiting
		case q.Get("error") != "":
			res.err = fmt.Errorf("oauthlogin: authorization refused: %s %s", q.Get("error"), q.Get("error_description"))
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
		select {
		case got <- res:
		default:
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

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
		return nil, fmt.Errorf("oauthlogin: redeeming the code: %w", err)
	}
	return tok, nil
}

func randomString() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
