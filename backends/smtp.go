package backends

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPSession is a logged-in backend SMTP session, ready for MAIL. The caller owns it and must
// end it with Client.Quit or Close.
type SMTPSession struct {
	// Client is go-smtp's client on the backend connection, past EHLO and AUTH (or XCLIENT).
	// Its timeouts are go-smtp's defaults (RFC 5321 §4.5.3.2), and every write to the
	// connection, message data included, is bounded by its CommandTimeout.
	Client *smtp.Client
	// Extensions are those the backend announced in its last EHLO reply before AUTH.
	Extensions Extensions
}

// Close closes the backend connection without QUIT: a transaction in progress is abandoned,
// and a message whose final dot was not sent is not delivered (RFC 5321 §4.1.1.4).
func (s *SMTPSession) Close() error { return s.Client.Close() }

// Extensions are SMTP service extensions as announced in an EHLO reply (RFC 5321 §4.1.1.1):
// upper-case keyword → parameters ("" when none).
type Extensions map[string]string

// Has reports whether the extension keyword (any case) was announced.
func (e Extensions) Has(keyword string) bool {
	_, ok := e[strings.ToUpper(keyword)]
	return ok
}

// Size is the SIZE limit (RFC 1870 §4) in bytes; 0 when SIZE was not announced, has no
// value, or declares no fixed limit.
func (e Extensions) Size() int64 {
	n, err := strconv.ParseInt(e["SIZE"], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// reportedExtensions are the EHLO keywords SMTPSession.Extensions and ProbeSMTP report (go-smtp's
// client answers for one keyword at a time): those saslgate relays or relies on.
var reportedExtensions = []string{
	"8BITMIME", "AUTH", "BINARYMIME", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES",
	"PIPELINING", "REQUIRETLS", "SIZE", "SMTPUTF8", "STARTTLS", "XCLIENT",
}

// DialSMTP connects to the backend, secures the connection as configured and logs in as user,
// all within cfg.Timeout and ctx: with AUTH PLAIN or LOGIN and secret (RFC 4954); with AUTH
// PLAIN as cfg.MasterUser and the secret in cfg.MasterSecretFile, read now, for logins
// "master" (user as authorization identity, RFC 4616) and "master_separator" (authentication
// identity user+cfg.MasterSeparator+cfg.MasterUser); with AUTH OAUTHBEARER or XOAUTH2 and
// secret as the access token for login "token"; or, with Login "xclient", with Postfix's
// XCLIENT LOGIN=. Only "plain", "login" and "token" use secret. Every EHLO names
// cfg.Hostname. The username and secret are checked before anything is sent. Errors wrap
// ErrRejected (a 535 from the backend, or refused by this package) or ErrUnavailable
// (anything else); neither ever contains a secret.
//
// With cfg.ForwardClientAddress and a backend offering XCLIENT ADDR, client's address goes
// first in XCLIENT ADDR= PORT= (together with LOGIN= for login "xclient").
func DialSMTP(ctx context.Context, cfg Config, user string, secret Secret, client Client) (*SMTPSession, error) {
	cfg, creds, err := cfg.prepareLogin("smtp", user, secret)
	if err != nil {
		return nil, err
	}
	d := &smtpDial{cfg: cfg, user: user, client: client}
	switch d.cfg.Login {
	case LoginXClient:
	case LoginToken:
		d.redact = []string{secret.Reveal(), base64.StdEncoding.EncodeToString(d.cfg.tokenResponse(user, secret))}
	default:
		s := creds.password.Reveal()
		// go-smtp's client sends these forms; a backend echoing them must not leak the secret.
		d.redact = []string{s, base64.StdEncoding.EncodeToString([]byte(creds.authzid + "\x00" + creds.authcid + "\x00" + s)),
			base64.StdEncoding.EncodeToString([]byte(s))}
	}
	return d.run(ctx, func(c *smtp.Client) error { return d.login(c, creds) })
}

// ProbeSMTP connects and secures the connection like DialSMTP, but only to learn the
// extensions the backend announces to EHLO (after STARTTLS when configured), then QUITs.
// Errors wrap ErrUnavailable.
func ProbeSMTP(ctx context.Context, cfg Config) (Extensions, error) {
	if err := cfg.Validate(); err != nil {
		return nil, misconfigured("smtp", err)
	}
	d := &smtpDial{cfg: cfg.withDefaults()}
	sess, err := d.run(ctx, nil)
	if err != nil {
		return nil, err
	}
	sess.Client.CommandTimeout = d.cfg.Timeout.D()
	if err := sess.Client.Quit(); err != nil {
		sess.Close()
	}
	return sess.Extensions, nil
}

// smtpDial is the state of one DialSMTP or ProbeSMTP call. The part before go-smtp's client
// takes over (greeting, STARTTLS, XCLIENT) is written here, because the client offers no way
// to name itself before STARTTLS nor to send XCLIENT.
type smtpDial struct {
	cfg    Config
	user   string // "" when probing
	client Client
	ctx    context.Context
	conn   net.Conn // raw, or TLS over it
	text   *textproto.Conn
	redact []string
}

func (d *smtpDial) unavailable(stage string, err error) error {
	return unavailable(d.ctx, d.cfg, "smtp", stage, err)
}

// run dials and runs the session setup; login, if not nil, authenticates go-smtp's client.
func (d *smtpDial) run(ctx context.Context, login func(*smtp.Client) error) (*SMTPSession, error) {
	var sess *SMTPSession
	err := dial(ctx, d.cfg, "smtp", func(ctx context.Context, raw net.Conn, tlsCfg *tls.Config) (net.Conn, error) {
		d.ctx = ctx
		deadline, _ := ctx.Deadline()
		var err error
		if sess, err = d.session(raw, tlsCfg, deadline, login); err != nil {
			return nil, err
		}
		return d.conn, nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

func (d *smtpDial) session(raw net.Conn, tlsCfg *tls.Config, deadline time.Time, login func(*smtp.Client) error) (*SMTPSession, error) {
	d.conn = raw
	if d.cfg.TLS == "implicit" {
		if err := d.handshake(tlsCfg); err != nil {
			return nil, err
		}
	}
	d.text = textproto.NewConn(d.conn)
	if _, _, err := d.text.ReadResponse(220); err != nil {
		return nil, d.unavailable("greeting", d.replyError(err))
	}
	if d.cfg.TLS == "starttls" {
		if err := d.startTLS(tlsCfg); err != nil {
			return nil, err
		}
	}
	forward := d.cfg.ForwardClientAddress && d.client.Addr.IsValid()
	if d.user != "" && (d.cfg.Login == LoginXClient || forward) {
		if err := d.xclient(d.cfg.Login == LoginXClient, forward); err != nil {
			return nil, err
		}
	}
	if d.text.R.Buffered() > 0 {
		return nil, d.unavailable("greeting", errors.New("backend sent data before EHLO"))
	}

	// go-smtp's client reads a greeting before its EHLO: give it back the one already read
	// (or XCLIENT's, which RFC-wise is a new greeting).
	bc := &backendConn{Conn: d.conn, pending: []byte("220 greeting already read by saslgate\r\n")}
	c := smtp.NewClient(bc)
	commandTimeout := c.CommandTimeout
	c.CommandTimeout = time.Until(deadline)
	if err := c.Hello(d.cfg.Hostname); err != nil {
		return nil, d.unavailable("ehlo", d.replyError(err))
	}
	if login != nil {
		if err := login(c); err != nil {
			return nil, err
		}
	}
	ext := make(Extensions)
	for _, kw := range reportedExtensions {
		if ok, param := c.Extension(kw); ok {
			ext[kw] = param
		}
	}
	c.CommandTimeout = commandTimeout
	bc.writeTimeout = commandTimeout
	return &SMTPSession{Client: c, Extensions: ext}, nil
}

func (d *smtpDial) handshake(tlsCfg *tls.Config) error {
	tc := tls.Client(d.conn, tlsCfg)
	if err := tc.HandshakeContext(d.ctx); err != nil {
		return d.unavailable("tls handshake", err)
	}
	d.conn = tc
	return nil
}

// startTLS runs RFC 3207 STARTTLS; it never falls back to plain text.
func (d *smtpDial) startTLS(tlsCfg *tls.Config) error {
	ext, err := d.ehlo()
	if err != nil {
		return d.unavailable("ehlo", err)
	}
	if !ext.Has("STARTTLS") {
		return d.unavailable("starttls", errors.New("backend does not offer STARTTLS"))
	}
	if _, err := d.cmd(220, "STARTTLS"); err != nil {
		return d.unavailable("starttls", err)
	}
	// Anything buffered now came in clear text before the handshake and could have been
	// injected (CVE-2011-0411 class): drop it with the old reader.
	if err := d.handshake(tlsCfg); err != nil {
		return err
	}
	d.text = textproto.NewConn(d.conn)
	return nil
}

// xclient runs Postfix's XCLIENT (XCLIENT_README: values are xtext, RFC 3461 §4; the command
// is allowed outside a transaction from smtpd_authorized_xclient_hosts, and its 220 reply
// restarts the session, so EHLO follows) with LOGIN=, when login, and ADDR= and PORT=, when
// forward and the backend offers them. Only a missing LOGIN is an error.
func (d *smtpDial) xclient(login, forward bool) error {
	ext, err := d.ehlo()
	if err != nil {
		return d.unavailable("ehlo", err)
	}
	offered := ext["XCLIENT"]
	var attrs []string
	if login {
		if !hasField(offered, "LOGIN") {
			return d.unavailable("xclient", errors.New("backend does not offer XCLIENT LOGIN (is saslgate in smtpd_authorized_xclient_hosts?)"))
		}
		attrs = append(attrs, "LOGIN="+xtext(d.user))
	}
	if forward && hasField(offered, "ADDR") {
		addr := d.client.Addr.Addr().Unmap()
		v := addr.String()
		if addr.Is6() {
			v = "IPV6:" + v
		}
		attrs = append(attrs, "ADDR="+xtext(v))
		// saslgate does no reverse lookup: [UNAVAILABLE] makes Postfix log "unknown[addr]"
		// rather than keep saslgate's own name for the client.
		if hasField(offered, "NAME") {
			attrs = append(attrs, "NAME=[UNAVAILABLE]")
		}
		if hasField(offered, "PORT") {
			attrs = append(attrs, "PORT="+strconv.Itoa(int(d.client.Addr.Port())))
		}
	}
	if len(attrs) == 0 {
		return nil
	}
	if _, err := d.cmd(220, "XCLIENT "+strings.Join(attrs, " ")); err != nil {
		return d.unavailable("xclient", err)
	}
	return nil
}

func (d *smtpDial) ehlo() (Extensions, error) {
	msg, err := d.cmd(250, "EHLO "+d.cfg.Hostname)
	if err != nil {
		return nil, err
	}
	return parseEHLO(msg), nil
}

// cmd sends one command line and reads its reply, which must have code expect.
func (d *smtpDial) cmd(expect int, line string) (string, error) {
	id, err := d.text.Cmd("%s", line)
	if err != nil {
		return "", err
	}
	d.text.StartResponse(id)
	defer d.text.EndResponse(id)
	_, msg, err := d.text.ReadResponse(expect)
	return msg, d.replyError(err)
}

// login authenticates with AUTH PLAIN (RFC 4616; the authzid is empty but with login
// "master") or AUTH LOGIN; a 535 (RFC 4954 §6: credentials invalid) rejects this user,
// anything else makes the backend unavailable.
func (d *smtpDial) login(c *smtp.Client, creds credentials) error {
	var client sasl.Client
	var tc *tokenClient
	switch d.cfg.Login {
	case LoginXClient:
		return nil
	case LoginLogin:
		client = sasl.NewLoginClient(creds.authcid, creds.password.Reveal())
	case LoginToken:
		tc = &tokenClient{mech: d.cfg.tokenMechanism(), msg: d.cfg.tokenResponse(creds.authzid, creds.password), answer: d.cfg.tokenErrorAnswer()}
		client = tc
	default:
		client = sasl.NewPlainClient(creds.authzid, creds.authcid, creds.password.Reveal())
	}
	mech, _, _ := client.Start()
	if !c.SupportsAuth(mech) {
		return d.unavailable("login", fmt.Errorf("backend does not offer AUTH %s", mech))
	}
	err := c.Auth(client)
	var se *smtp.SMTPError
	switch {
	case err == nil && tc != nil && tc.challenge != nil:
		return d.unavailable("login", errors.New("backend accepted the login after its error challenge"))
	case err == nil:
		return nil
	case errors.As(err, &se) && se.Code == 535:
		var after string
		if tc != nil && tc.challenge != nil {
			after = " after the error challenge " + sanitize(string(tc.challenge), d.redact...)
		}
		return &loginError{kind: ErrRejected, msg: fmt.Sprintf("backends: smtp backend %s rejected login for %s: %v%s",
			d.cfg.Address, d.cfg.loginFor(d.user), d.replyError(err), after)}
	default:
		return d.unavailable("login", d.replyError(err))
	}
}

// tokenClient is login "token"'s SASL client: the client response as initial response
// (RFC 4954 §4), then the mechanism's answer to one error challenge (RFC 7628 §3.2.3), after
// which the backend fails the exchange with 535.
type tokenClient struct {
	mech        string
	msg, answer []byte
	challenge   []byte // the error challenge; nil until one came
}

var _ sasl.Client = (*tokenClient)(nil)

func (t *tokenClient) Start() (string, []byte, error) { return t.mech, t.msg, nil }

func (t *tokenClient) Next(challenge []byte) ([]byte, error) {
	if t.challenge != nil {
		return nil, errors.New("backend sent a second challenge")
	}
	t.challenge = append([]byte{}, challenge...)
	return t.answer, nil
}

// replyError turns a backend reply error into one whose text is sanitized; other errors pass.
func (d *smtpDial) replyError(err error) error {
	var te *textproto.Error
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &te):
		return fmt.Errorf("backend replied %03d %s", te.Code, sanitize(te.Msg, d.redact...))
	case errors.As(err, &se):
		return fmt.Errorf("backend replied %03d %d.%d.%d %s", se.Code,
			se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], sanitize(se.Message, d.redact...))
	}
	return err
}

// parseEHLO reads the text of an EHLO reply (lines joined by "\n", as textproto returns it):
// the first line greets, each further line is "keyword [params]" (RFC 5321 §4.1.1.1).
func parseEHLO(msg string) Extensions {
	ext := make(Extensions)
	lines := strings.Split(msg, "\n")
	for _, line := range lines[1:] {
		kw, param, _ := strings.Cut(strings.TrimSpace(line), " ")
		if kw != "" {
			ext[strings.ToUpper(kw)] = strings.TrimSpace(param)
		}
	}
	return ext
}

// hasField reports whether the space-separated list has field, in any case.
func hasField(list, field string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, field) {
			return true
		}
	}
	return false
}

// xtext encodes s per RFC 3461 §4: bytes outside "!".."~", and "+" and "=", become "+XX".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "+%02X", c)
		}
	}
	return b.String()
}

// backendConn is the backend connection as go-smtp's client sees it. It first returns pending
// (the greeting the client insists on reading), and once writeTimeout is set it bounds every
// write: the client clears its deadlines while message data streams.
type backendConn struct {
	net.Conn
	pending      []byte
	writeTimeout time.Duration
}

func (c *backendConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *backendConn) Write(b []byte) (int, error) {
	if c.writeTimeout > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(b)
}
