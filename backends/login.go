package backends

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/saslgate/saslgate/proxy/sasl"
)

// What the dialers (DialIMAP, DialPOP3, DialSieve, DialSMTP) share: their error kinds, the
// checks made before anything is sent, the dial within the timeout, and the redaction of
// backend text.

var (
	// ErrUnavailable is wrapped by errors that leave the backend unusable for now: dial, TLS,
	// timeout, BYE or 421, protocol violations, a temporary refusal of the login, bad
	// configuration.
	ErrUnavailable = errors.New("backends: backend unavailable")
	// ErrRejected is wrapped by errors that reject this user's login: a tagged NO or BAD to the
	// IMAP login command, an SMTP 535, or a username or secret that cannot be sent at all.
	ErrRejected = errors.New("backends: backend rejected login")
)

// maxUsernameLen is the longest username sent to a backend, in bytes.
const maxUsernameLen = 255

// loginError is the error DialIMAP and DialSMTP return: kind is ErrUnavailable or ErrRejected.
type loginError struct {
	kind  error
	msg   string
	cause error
}

func (e *loginError) Error() string {
	if e.cause == nil {
		return e.msg
	}
	return e.msg + ": " + e.cause.Error()
}

func (e *loginError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// checkUser refuses a username that must never reach the wire: empty, over maxUsernameLen
// bytes, or with CR, LF or NUL (command injection).
func checkUser(protocol, user string) error {
	var reason string
	switch {
	case user == "":
		reason = "username is empty"
	case len(user) > maxUsernameLen:
		reason = fmt.Sprintf("username is longer than %d bytes", maxUsernameLen)
	case strings.ContainsAny(user, "\r\n\x00"):
		reason = fmt.Sprintf("username %q contains CR, LF or NUL", user)
	default:
		return nil
	}
	return &loginError{kind: ErrRejected, msg: "backends: not sent to the " + protocol + " backend: " + reason}
}

// checkCredentials is checkUser, and also refuses a secret that is empty or has NUL (it would
// split the PLAIN message, RFC 4616 §2, and IMAP literals cannot carry NUL, RFC 9051 §4.3).
func checkCredentials(protocol, user string, secret Secret) error {
	if err := checkUser(protocol, user); err != nil {
		return err
	}
	var reason string
	switch {
	case secret == "":
		reason = fmt.Sprintf("secret for %q is empty", user)
	case strings.IndexByte(secret.Reveal(), 0) >= 0:
		reason = fmt.Sprintf("secret for %q contains NUL", user)
	default:
		return nil
	}
	return &loginError{kind: ErrRejected, msg: "backends: not sent to the " + protocol + " backend: " + reason}
}

// checkLogin refuses what must never reach the wire for cfg.Login: checkUser's usernames, a
// username holding the master separator (it would move the split between user and master
// user), and, in the logins that send it, checkCredentials's per-user secrets.
func (c Config) checkLogin(protocol, user string, secret Secret) error {
	switch c.Login {
	case LoginXClient, LoginMaster:
		return checkUser(protocol, user)
	case LoginMasterSeparator:
		if err := checkUser(protocol, user); err != nil {
			return err
		}
		if sep := c.separator(); strings.Contains(user, sep) {
			return &loginError{kind: ErrRejected, msg: fmt.Sprintf("backends: not sent to the %s backend: username %q contains the master separator %q", protocol, user, sep)}
		}
		return nil
	case LoginToken:
		return checkToken(protocol, user, secret)
	default:
		return checkCredentials(protocol, user, secret)
	}
}

// checkToken is checkUser for login "token", and also refuses a user with any control
// character (%x01 separates the kvpairs of OAUTHBEARER and XOAUTH2, RFC 7628 §3.1) and a
// token that is empty or not printable ASCII without spaces (RFC 6750 §2.1 b64token). The
// token never appears in the error.
func checkToken(protocol, user string, token Secret) error {
	if err := checkUser(protocol, user); err != nil {
		return err
	}
	var reason string
	switch t := token.Reveal(); {
	case strings.ContainsFunc(user, isControl):
		reason = fmt.Sprintf("username %q contains control characters", user)
	case t == "":
		reason = fmt.Sprintf("token for %q is empty", user)
	case strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		reason = fmt.Sprintf("token for %q is not printable ASCII without spaces (token redacted)", user)
	default:
		return nil
	}
	return &loginError{kind: ErrRejected, msg: "backends: not sent to the " + protocol + " backend: " + reason}
}

// tokenResponse is the client response of login "token": OAUTHBEARER's GS2 header with the
// user as authzid and the auth kvpair (RFC 7628 §3.1; host and port are optional and left
// out), or XOAUTH2's user and auth. It runs after checkToken.
func (c Config) tokenResponse(user string, token Secret) []byte {
	if c.tokenMechanism() == sasl.XOAuth2 {
		return sasl.EncodeXOAuth2(user, token.Reveal())
	}
	return sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: user, Token: token.Reveal()})
}

// tokenErrorAnswer is the client's answer to the error challenge of login "token": %x01 for
// OAUTHBEARER (RFC 7628 §3.2.3), an empty response for XOAUTH2.
func (c Config) tokenErrorAnswer() []byte {
	if c.tokenMechanism() == sasl.XOAuth2 {
		return []byte{}
	}
	return []byte{0x01}
}

// credentials is what a login sends (RFC 4616 §2 names): the identity to act as ("" for
// the authenticated one), the identity authenticated, and its password.
type credentials struct {
	authzid, authcid string
	password         Secret
}

// credentials returns what cfg.Login sends for user, reading the master secret file for the
// master logins. It runs after Validate and checkLogin.
func (c Config) credentials(user string, secret Secret) (credentials, error) {
	switch c.Login {
	case LoginMaster, LoginMasterSeparator:
		ms, err := c.MasterSecret()
		if err != nil {
			return credentials{}, err
		}
		if c.Login == LoginMaster {
			return credentials{authzid: user, authcid: c.MasterUser, password: ms}, nil
		}
		return credentials{authcid: user + c.separator() + c.MasterUser, password: ms}, nil
	case LoginXClient:
		return credentials{authcid: user}, nil
	case LoginToken:
		return credentials{authzid: user, password: secret}, nil
	}
	return credentials{authcid: user, password: secret}, nil
}

// loginFor names, for messages, the user logged in as and the master user it logs in as.
func (c Config) loginFor(user string) string {
	if c.usesMaster() {
		return fmt.Sprintf("%q (as master user %q)", user, c.MasterUser)
	}
	return strconv.Quote(user)
}

// MasterSecret reads MasterSecretFile under secretfile's rule: one line of text without NUL,
// the line end not part of it. It is read on every call, so a replaced file applies to the
// next login. Errors name the file, never its contents.
func (c Config) MasterSecret() (Secret, error) {
	if c.MasterSecretFile == "" {
		return "", errors.New("backends: master_secret_file: not set")
	}
	b, _, err := readPrivateFile(c.MasterSecretFile, "master_secret_file")
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	switch {
	case s == "":
		return "", fmt.Errorf("backends: master_secret_file %s is empty", c.MasterSecretFile)
	case strings.ContainsAny(s, "\r\n\x00"):
		return "", fmt.Errorf("backends: master_secret_file %s is not one line of text (NUL or several lines)", c.MasterSecretFile)
	}
	return Secret(s), nil
}

// prepareLogin makes the checks of a login before anything is sent (the username and secret,
// the configuration; login "xclient" is for SMTP only) and returns the configuration with its
// defaults and what the login sends.
func (c Config) prepareLogin(protocol, user string, secret Secret) (Config, credentials, error) {
	if err := c.checkLogin(protocol, user, secret); err != nil {
		return c, credentials{}, err
	}
	if err := c.Validate(); err != nil {
		return c, credentials{}, misconfigured(protocol, err)
	}
	if c.Login == LoginXClient && protocol != "smtp" {
		return c, credentials{}, &loginError{kind: ErrUnavailable, msg: fmt.Sprintf(`backends: %s backend misconfigured: login "xclient" is for SMTP backends`, protocol)}
	}
	c = c.withDefaults()
	creds, err := c.credentials(user, secret)
	if err != nil {
		return c, credentials{}, misconfigured(protocol, err)
	}
	return c, creds, nil
}

// loginState is what the client of one DialIMAP, DialPOP3 or DialSieve call keeps of it: the
// backend's configuration, the user and what the login sends for them, the client's address
// for forwarding, and the dial's context.
type loginState struct {
	protocol string
	cfg      Config
	user     string // the user logged in as, for messages
	authzid  string // what the login sends: credentials
	authcid  string
	secret   string
	client   Client
	ctx      context.Context
}

func newLoginState(protocol string, cfg Config, user string, creds credentials, client Client) loginState {
	return loginState{protocol: protocol, cfg: cfg, user: user, authzid: creds.authzid, authcid: creds.authcid, secret: creds.password.Reveal(), client: client}
}

// unavailable is the ErrUnavailable error of a failed stage of the dial.
func (s *loginState) unavailable(stage string, err error) error {
	return unavailable(s.ctx, s.cfg, s.protocol, stage, err)
}

func misconfigured(protocol string, err error) error {
	return &loginError{kind: ErrUnavailable, msg: "backends: " + protocol + " backend misconfigured", cause: err}
}

// dial connects to cfg.Address and runs session on the connection, all within cfg.Timeout
// and ctx: the connection's deadline is the timeout's, and passes at once when ctx ends.
// session gets that context and the TLS configuration (nil for tls "none"), and returns the
// connection the session goes on with (the socket, or TLS over it), whose deadline dial then
// clears; nil when none goes on. On error the socket is closed.
func dial(ctx context.Context, cfg Config, protocol string, session func(ctx context.Context, raw net.Conn, tlsCfg *tls.Config) (net.Conn, error)) error {
	var tlsCfg *tls.Config
	if cfg.TLS != "none" {
		var err error
		if tlsCfg, err = cfg.TLSConfig(); err != nil {
			return unavailable(context.Background(), cfg, protocol, "tls config", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout.D())
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return unavailable(ctx, cfg, protocol, "dial", err)
	}
	// Deadline first, then the cancellation hook, so a cancellation is never overwritten.
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	conn, err := session(ctx, raw, tlsCfg)
	if stopped := stop(); err == nil && (!stopped || ctx.Err() != nil) {
		err = unavailable(ctx, cfg, protocol, "login", ctx.Err()) // ctx ended as the login completed
	}
	if err == nil && conn != nil {
		if err = conn.SetDeadline(time.Time{}); err != nil {
			err = unavailable(ctx, cfg, protocol, "clear deadline", err)
		}
	}
	if err != nil {
		_ = raw.Close()
	}
	return err
}

// unavailable is the ErrUnavailable error for a failed stage of a dial within ctx; a timeout
// of ctx is reported as such.
func unavailable(ctx context.Context, cfg Config, protocol, stage string, err error) error {
	if ctx != nil {
		ctxErr := ctx.Err()
		// The conn deadline equals the ctx deadline and may fire before the ctx's own timer.
		var ne net.Error
		if dl, ok := ctx.Deadline(); ctxErr == nil && ok && !time.Now().Before(dl) && errors.As(err, &ne) && ne.Timeout() {
			ctxErr = context.DeadlineExceeded
		}
		if ctxErr != nil {
			err = fmt.Errorf("%w (timeout %v)", ctxErr, cfg.Timeout.D())
		}
	}
	return &loginError{
		kind:  ErrUnavailable,
		msg:   fmt.Sprintf("backends: %s backend %s unavailable: %s", protocol, cfg.Address, stage),
		cause: err,
	}
}

// maxTextLen bounds backend text copied into errors.
const maxTextLen = 200

// sanitize makes backend text safe to log: each of secrets redacted (a backend echoing input
// must not leak it), control bytes replaced, length bounded.
func sanitize(s string, secrets ...string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, redacted)
		}
	}
	if len(s) > maxTextLen {
		s = s[:maxTextLen] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
