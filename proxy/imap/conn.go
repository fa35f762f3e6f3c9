package imap

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/frontend"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// errLogout ends the session after LOGOUT.
var errLogout = errors.New("imap: logout")

// run drives the not-authenticated state until the client logs out, fails,
// or authenticates and the spliced session ends.
func (c *conn) run() error {
	cfg := c.s.Config
	deadline := time.Now().Add(cfg.preauthTimeout())
	c.Raw.SetDeadline(deadline)
	if c.s.Listener.TLS == proxy.TLSImplicit {
		if err := c.startTLS(deadline); err != nil {
			return err
		}
	} else {
		c.SetStream(c.Raw)
	}
	c.writef("* OK [CAPABILITY %s] saslgate ready", c.capabilities())
	if err := c.BW.Flush(); err != nil {
		return err
	}
	for {
		cmd, err := c.reader().read()
		var bad *badCommand
		switch {
		case errors.As(err, &bad):
			if werr := c.badCommand(bad.tag, bad.text); werr != nil {
				return werr
			}
			if errors.Is(err, errFatal) {
				return err
			}
			continue
		case err != nil:
			if frontend.IsTimeout(err) {
				c.NC.SetWriteDeadline(time.Now().Add(time.Second))
				if c.Ending() {
					c.BW.WriteString(byeShutdown)
				} else {
					c.writef("* BYE Autologout; authentication took too long")
				}
				c.BW.Flush()
			}
			return err
		}
		if err := c.handle(cmd, deadline); err != nil {
			return err
		}
		if err := c.BW.Flush(); err != nil {
			return err
		}
	}
}

func (c *conn) reader() *commandReader {
	return &commandReader{
		br:         c.BR,
		maxLine:    orInt(c.s.Config.MaxLineLength, DefaultMaxLineLength),
		maxLiteral: orInt(c.s.Config.MaxLiteralSize, DefaultMaxLiteralSize),
		ready: func() error {
			c.writef("+ Ready for literal data")
			return c.BW.Flush()
		},
	}
}

// startTLS runs the TLS handshake within the listener's handshake timeout, then gives the
// connection back its pre-authentication deadline.
func (c *conn) startTLS(preauth time.Time) error {
	if err := c.StartTLS(c.s.fe.ConnTLS(), c.s.Listener, preauth); err != nil {
		return fmt.Errorf("imap: TLS handshake: %w", err)
	}
	return nil
}

func (c *conn) writef(format string, args ...any) {
	fmt.Fprintf(c.BW, format, args...)
	c.BW.WriteString("\r\n")
}

// badCommand answers BAD and hangs up once a client has sent too many: before
// authentication, a stream of junk is more likely another protocol than IMAP.
func (c *conn) badCommand(tag, text string) error {
	if tag == "" {
		tag = "*"
	}
	c.writef("%s BAD %s", tag, text)
	c.bad++
	if c.bad >= orInt(c.s.Config.MaxBadCommands, DefaultMaxBadCommands) {
		c.writef("* BYE Too many invalid commands")
		c.BW.Flush()
		return errors.New("imap: too many invalid commands")
	}
	return c.BW.Flush()
}

// capabilities is the pre-authentication CAPABILITY list. Before TLS on a
// STARTTLS listener, no AUTH= and LOGINDISABLED (RFC 9051 §6.2.3).
func (c *conn) capabilities() string {
	if !c.TLS {
		return "IMAP4rev1 SASL-IR ID STARTTLS LOGINDISABLED"
	}
	caps := "IMAP4rev1 SASL-IR ID AUTH=OAUTHBEARER AUTH=XOAUTH2"
	if !c.s.Config.AllowTokenAsLoginPassword {
		caps += " LOGINDISABLED"
	}
	return caps
}

func (c *conn) handle(cmd *command, deadline time.Time) error {
	switch cmd.name {
	case "CAPABILITY":
		if len(cmd.args) != 0 {
			return c.badCommand(cmd.tag, "CAPABILITY takes no arguments")
		}
		c.writef("* CAPABILITY %s", c.capabilities())
		c.writef("%s OK CAPABILITY completed", cmd.tag)
	case "NOOP":
		if len(cmd.args) != 0 {
			return c.badCommand(cmd.tag, "NOOP takes no arguments")
		}
		c.writef("%s OK NOOP completed", cmd.tag)
	case "LOGOUT":
		if len(cmd.args) != 0 {
			return c.badCommand(cmd.tag, "LOGOUT takes no arguments")
		}
		c.writef("* BYE Logging out")
		c.writef("%s OK LOGOUT completed", cmd.tag)
		c.BW.Flush()
		return errLogout
	case "ID":
		if err := checkID(cmd.args); err != nil {
			return c.badCommand(cmd.tag, err.Error())
		}
		c.writef(`* ID ("name" "saslgate")`)
		c.writef("%s OK ID completed", cmd.tag)
	case "STARTTLS":
		if len(cmd.args) != 0 {
			return c.badCommand(cmd.tag, "STARTTLS takes no arguments")
		}
		if c.TLS || c.s.Listener.TLS != proxy.TLSStartTLS {
			return c.badCommand(cmd.tag, "STARTTLS not available")
		}
		c.writef("%s OK Begin TLS negotiation now", cmd.tag)
		if err := c.BW.Flush(); err != nil {
			return err
		}
		// Anything the client sent behind STARTTLS came in the clear and may
		// be an injection (CVE-2011-0411): drop it.
		if n := c.BR.Buffered(); n > 0 {
			c.Log.Warn("discarded plaintext sent after STARTTLS", "bytes", n)
		}
		return c.startTLS(deadline)
	case "AUTHENTICATE":
		return c.authenticate(cmd, deadline)
	case "LOGIN":
		return c.login(cmd, deadline)
	case "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
		"LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE", "ENABLE", "UNSELECT",
		"CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID":
		return c.badCommand(cmd.tag, "Authenticate first")
	default:
		return c.badCommand(cmd.tag, "Unknown command")
	}
	return nil
}

// checkID validates ID arguments: NIL or a list of string pairs, within
// RFC 2971 §3.3's limits (fields ≤ 30 octets, values ≤ 1024, ≤ 30 pairs).
func checkID(args []token) error {
	if len(args) == 1 && args[0].kind == tokAtom && strings.EqualFold(args[0].s, "NIL") {
		return nil
	}
	if len(args) < 2 || args[0].kind != tokLParen || args[len(args)-1].kind != tokRParen {
		return errors.New("ID takes NIL or a parenthesized list")
	}
	fields := args[1 : len(args)-1]
	if len(fields)%2 != 0 || len(fields) > 60 {
		return errors.New("ID list must hold at most 30 field/value pairs")
	}
	for i, f := range fields {
		nilValue := f.kind == tokAtom && strings.EqualFold(f.s, "NIL")
		switch {
		case i%2 == 0 && (f.kind != tokString || len(f.s) > 30):
			return errors.New("ID field names are strings of at most 30 octets")
		case i%2 == 1 && !nilValue && (f.kind != tokString || len(f.s) > 1024):
			return errors.New("ID values are NIL or strings of at most 1024 octets")
		}
	}
	return nil
}

// login handles LOGIN: refused unless the access token may be the password.
func (c *conn) login(cmd *command, deadline time.Time) error {
	if !c.TLS {
		c.writef("%s NO [PRIVACYREQUIRED] Use STARTTLS first", cmd.tag)
		return nil
	}
	if !c.s.Config.AllowTokenAsLoginPassword {
		c.writef("%s NO LOGIN is disabled; authenticate with AUTHENTICATE OAUTHBEARER or XOAUTH2", cmd.tag)
		return nil
	}
	if len(cmd.args) != 2 || cmd.args[0].kind > tokString || cmd.args[1].kind > tokString {
		return c.badCommand(cmd.tag, "LOGIN takes a user name and a password")
	}
	creds := sasl.Credentials{Mechanism: "LOGIN", AuthzID: cmd.args[0].s, Token: cmd.args[1].s, CBFlag: 'n'}
	a, err := c.begin("LOGIN", deadline)
	if err != nil {
		return err
	}
	defer a.Cancel()
	if err := a.Auth(creds); err != nil {
		return c.authFailed(cmd.tag, a, err)
	}
	return c.loggedIn(cmd.tag, a)
}

// attempt is one authentication attempt of the login pipeline and the backend session it
// opened.
type attempt = frontend.Attempt[*backends.IMAPSession]

// begin starts an attempt after the failed-authentication delay (frontend.Begin).
func (c *conn) begin(mech string, deadline time.Time) (*attempt, error) {
	return frontend.Begin(c.s.Login, proxy.Attempt{
		Protocol: Protocol.Name, Mechanism: mech, Listener: c.s.Listener, Conn: c.Bind,
		Client: c.Client, Log: c.Log, Observer: c.Obs,
	}, deadline, c.s.fe.Sessions.Done(), c.s.dial)
}

// authenticate runs AUTHENTICATE (RFC 9051 §6.2.2, SASL-IR RFC 4959).
func (c *conn) authenticate(cmd *command, deadline time.Time) error {
	if !c.TLS {
		c.writef("%s NO [PRIVACYREQUIRED] Use STARTTLS first", cmd.tag)
		return nil
	}
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != tokAtom ||
		len(cmd.args) == 2 && cmd.args[1].kind != tokAtom {
		return c.badCommand(cmd.tag, "AUTHENTICATE takes a mechanism and an optional initial response")
	}
	mech := strings.ToUpper(cmd.args[0].s)
	if mech != sasl.OAuthBearer && mech != sasl.XOAuth2 {
		c.writef("%s NO Unsupported authentication mechanism", cmd.tag)
		return nil
	}
	a, err := c.begin(mech, deadline)
	if err != nil {
		return err
	}
	defer a.Cancel()
	srv := sasl.NewOAuthBearer(a.Auth)
	if mech == sasl.XOAuth2 {
		srv = sasl.NewXOAuth2(a.Auth)
	}
	var resp []byte // nil: no initial response
	if len(cmd.args) == 2 {
		var err error
		if resp, err = decodeResponse(cmd.args[1].s); err != nil {
			return c.badCommand(cmd.tag, "Invalid base64 in initial response")
		}
	}
	for {
		chal, done, err := srv.Next(resp)
		if err != nil {
			return c.authFailed(cmd.tag, a, err)
		}
		if done {
			return c.loggedIn(cmd.tag, a)
		}
		c.writef("+ %s", base64.StdEncoding.EncodeToString(chal))
		if err := c.BW.Flush(); err != nil {
			return err
		}
		// Both mechanisms' only non-empty challenge is the error challenge.
		errorChallenge := len(chal) > 0
		if errorChallenge {
			// RFC 7628 §3.2.3: the client replies to the error challenge; some
			// never do, so wait only briefly.
			replyBy := time.Now().Add(c.s.Config.errorReplyTimeout())
			if replyBy.After(deadline) {
				replyBy = deadline
			}
			c.NC.SetReadDeadline(replyBy)
		}
		line, err := readLine(c.BR, orInt(c.s.Config.MaxLineLength, DefaultMaxLineLength))
		c.NC.SetReadDeadline(deadline)
		switch {
		case errorChallenge && (err == nil || errors.Is(err, errLineTooLong) || frontend.IsTimeout(err)):
			// Any reply, or none, ends a failed exchange: never a new attempt.
			_, _, err = srv.Next([]byte{})
			return c.authFailed(cmd.tag, a, err)
		case errors.Is(err, errLineTooLong):
			return c.badCommand(cmd.tag, "Line too long")
		case errorChallenge && err != nil:
			// The client left after the error challenge: the attempt failed all the same,
			// and is observed as such (as SMTP does), with nobody left to answer.
			_, _, ferr := srv.Next([]byte{})
			c.s.Login.Finish(&a.Attempt, ferr)
			return err
		case err != nil:
			return err
		case string(line) == "*":
			c.writef("%s BAD AUTHENTICATE cancelled", cmd.tag)
			return nil
		}
		if resp, err = decodeResponse(string(line)); err != nil {
			return c.badCommand(cmd.tag, "Invalid base64 in response")
		}
	}
}

// decodeResponse decodes a base64 client response; "=" is the empty one (RFC 4959).
func decodeResponse(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// loggedIn answers the successful authentication with the backend's
// post-authentication capabilities and relays the session.
func (c *conn) loggedIn(tag string, a *attempt) error {
	sess := a.Session
	o := c.s.Login.Finish(&a.Attempt, nil)
	c.LoggedIn(o.Identity.User)
	if len(sess.Capabilities) > 0 {
		c.writef("%s OK [CAPABILITY %s] Logged in", tag, strings.Join(sess.Capabilities, " "))
	} else {
		c.writef("%s OK Logged in", tag)
	}
	if err := c.BW.Flush(); err != nil {
		sess.Close()
		return err
	}
	a.Cancel()
	bbr := sess.Reader
	sess.Reader = nil // the splice's: its buffer is freed once drained
	return c.Splice(sess.Conn, bbr, &responseBoundary{})
}

// failureReplies is the IMAP column of DESIGN.md's error table (RFC 5530 response codes),
// by the login pipeline's outcome. Malformed input is answered BAD (badCommand).
var failureReplies = map[proxy.Kind]string{
	proxy.Refused:            "NO [AUTHENTICATIONFAILED] Authentication failed",
	proxy.IdPUnavailable:     "NO [UNAVAILABLE] Token validation is temporarily unavailable",
	proxy.BackendUnavailable: "NO [UNAVAILABLE] Mailbox temporarily unavailable",
	proxy.BackendRefused:     "NO [UNAVAILABLE] Mailbox temporarily unavailable",
	proxy.Delayed:            "NO [UNAVAILABLE] Temporary failure",
	proxy.Error:              "NO [UNAVAILABLE] Temporary failure",
}

// authFailed answers a failed authentication from the pipeline's outcome.
func (c *conn) authFailed(tag string, a *attempt, err error) error {
	o := c.s.Login.Finish(&a.Attempt, err)
	if o.Kind == proxy.Malformed {
		return c.badCommand(tag, "Malformed "+a.Mechanism+" message")
	}
	c.writef("%s %s", tag, failureReplies[o.Kind])
	return nil
}
