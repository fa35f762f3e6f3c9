package sieve

import (
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/frontend"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// errLogout ends the session after LOGOUT.
var errLogout = errors.New("sieve: logout")

// The lines saslgate ends a session with (RFC 5804 §1.3: TRYLATER, a temporary failure, in
// a NO or BYE response).
const (
	byeShutdown = `BYE (TRYLATER) "Server shutting down, please reconnect."` + "\r\n"
	// byeLost ends a spliced session whose backend went away without a BYE of its own
	// (DESIGN.md's error table).
	byeLost    = `BYE (TRYLATER) "Backend connection lost."` + "\r\n"
	byeTimeout = `BYE "Autologout; authentication took too long."` + "\r\n"
)

// run drives the not-authenticated state until the client logs out, fails, or authenticates
// and the spliced session ends.
func (c *conn) run() error {
	deadline := time.Now().Add(c.s.Config.preauthTimeout())
	c.Raw.SetDeadline(deadline)
	switch {
	case c.plainTLS != nil:
		c.TLS, c.Bind = true, proxy.Conn{TLS: c.plainTLS}
		c.SetStream(c.Raw)
	case c.s.Listener.TLS == proxy.TLSImplicit:
		if err := c.startTLS(deadline); err != nil {
			return err
		}
	default:
		c.SetStream(c.Raw)
	}
	// RFC 5804 §1.7: the greeting is the capability response.
	c.BW.WriteString(c.s.capabilities(c.TLS))
	c.writeln(`OK "saslgate ready."`)
	if err := c.BW.Flush(); err != nil {
		return err
	}
	for {
		items, err := c.reader().read()
		var cmd *command
		if err == nil {
			cmd, err = parseCommand(items)
		}
		if err != nil {
			if done, err := c.inputError(err); done {
				return err
			}
			continue
		}
		if err := c.handle(cmd, deadline); err != nil {
			return err
		}
		if err := c.BW.Flush(); err != nil {
			return err
		}
	}
}

// inputError answers a line that could not be read: NO for bad input, BYE when the stream
// cannot go on or the pre-authentication time is up. done reports that the session ends,
// with err.
func (c *conn) inputError(err error) (done bool, _ error) {
	var bad *badInput
	switch {
	case errors.Is(err, errFatal) && errors.As(err, &bad):
		c.writeln("BYE " + sieveString(bad.text))
		c.BW.Flush()
		return true, err
	case errors.As(err, &bad):
		return c.badCommand(bad.text) != nil, err
	case frontend.IsTimeout(err):
		c.NC.SetWriteDeadline(time.Now().Add(time.Second))
		if c.Ending() {
			c.BW.WriteString(byeShutdown)
		} else {
			c.BW.WriteString(byeTimeout)
		}
		c.BW.Flush()
	}
	return true, err
}

func (c *conn) reader() *lineReader {
	return &lineReader{br: c.BR, maxLine: c.s.Config.maxLineLength(), maxLiteral: c.s.Config.maxLiteralSize()}
}

// startTLS runs the TLS handshake within the listener's handshake timeout, then gives the
// connection back its pre-authentication deadline.
func (c *conn) startTLS(preauth time.Time) error {
	if err := c.StartTLS(c.s.fe.ConnTLS(), c.s.Listener, preauth); err != nil {
		return fmt.Errorf("sieve: TLS handshake: %w", err)
	}
	return nil
}

func (c *conn) writeln(s string) {
	c.BW.WriteString(s)
	c.BW.WriteString("\r\n")
}

// badCommand answers NO and hangs up with BYE once a client has sent too many: before
// authentication, a stream of junk is more likely another protocol than ManageSieve.
func (c *conn) badCommand(text string) error {
	c.writeln("NO " + sieveString(text))
	c.bad++
	if c.bad >= c.s.Config.maxBadCommands() {
		c.writeln(`BYE "Too many invalid commands."`)
		c.BW.Flush()
		return errors.New("sieve: too many invalid commands")
	}
	return c.BW.Flush()
}

// handle runs one command of the not-authenticated state (RFC 5804 §2).
func (c *conn) handle(cmd *command, deadline time.Time) error {
	switch cmd.name {
	case "CAPABILITY":
		if len(cmd.args) != 0 {
			return c.badCommand("CAPABILITY takes no arguments")
		}
		c.BW.WriteString(c.s.capabilities(c.TLS))
		c.writeln(`OK "Capability completed."`)
	case "NOOP":
		// RFC 5804 §2.13: NOOP [string]; the string comes back in a TAG response code.
		switch {
		case len(cmd.args) == 0:
			c.writeln(`OK "NOOP completed."`)
		case len(cmd.args) == 1 && cmd.args[0].kind == itemString:
			c.writeln("OK (TAG " + sieveString(cmd.args[0].s) + `) "Done."`)
		default:
			return c.badCommand("NOOP takes an optional string")
		}
	case "LOGOUT":
		if len(cmd.args) != 0 {
			return c.badCommand("LOGOUT takes no arguments")
		}
		// RFC 5804 §2.3: the server answers, then closes.
		c.writeln(`OK "Logout completed."`)
		c.BW.Flush()
		return errLogout
	case "STARTTLS":
		if len(cmd.args) != 0 {
			return c.badCommand("STARTTLS takes no arguments")
		}
		if c.TLS || c.s.Listener.TLS != proxy.TLSStartTLS {
			return c.badCommand("STARTTLS not available")
		}
		c.writeln(`OK "Begin TLS negotiation now."`)
		if err := c.BW.Flush(); err != nil {
			return err
		}
		// Anything the client sent behind STARTTLS came in the clear and may be an injection
		// (CVE-2011-0411): dropped with the old reader.
		if n := c.BR.Buffered(); n > 0 {
			c.Log.Warn("discarded plaintext sent after STARTTLS", "bytes", n)
		}
		if err := c.startTLS(deadline); err != nil {
			return err
		}
		// RFC 5804 §2.2: after the handshake the server sends its capabilities, unasked.
		c.BW.WriteString(c.s.capabilities(c.TLS))
		c.writeln(`OK "TLS negotiation successful."`)
	case "AUTHENTICATE":
		return c.authenticate(cmd, deadline)
	case "HAVESPACE", "PUTSCRIPT", "LISTSCRIPTS", "SETACTIVE", "GETSCRIPT", "DELETESCRIPT",
		"RENAMESCRIPT", "CHECKSCRIPT", "UNAUTHENTICATE":
		return c.badCommand("Authenticate first")
	default:
		return c.badCommand("Unknown command")
	}
	return nil
}

// attempt is one authentication attempt of the login pipeline and the backend session it
// opened.
type attempt = frontend.Attempt[*backends.SieveSession]

// begin starts an attempt after the failed-authentication delay (frontend.Begin).
func (c *conn) begin(mech string, deadline time.Time) (*attempt, error) {
	return frontend.Begin(c.s.Login, proxy.Attempt{
		Protocol: Protocol.Name, Mechanism: mech, Listener: c.s.Listener, Conn: c.Bind,
		Client: c.Client, Log: c.Log, Observer: c.Obs,
	}, deadline, c.s.fe.Sessions.Done(), c.s.dial)
}

// authenticate runs AUTHENTICATE (RFC 5804 §2.1): a mechanism name and an optional initial
// response, each a string; challenges and responses are strings holding base64.
func (c *conn) authenticate(cmd *command, deadline time.Time) error {
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != itemString ||
		len(cmd.args) == 2 && cmd.args[1].kind != itemString {
		return c.badCommand("AUTHENTICATE takes a mechanism name and an optional initial response, as strings")
	}
	if !c.TLS {
		// RFC 5804 §1.3: ENCRYPT-NEEDED; the SASL capability is empty until STARTTLS.
		c.writeln(`NO (ENCRYPT-NEEDED) "Use STARTTLS first."`)
		return nil
	}
	mech := cmd.args[0].s
	switch {
	case equalFold(mech, sasl.OAuthBearer):
		mech = sasl.OAuthBearer
	case equalFold(mech, sasl.XOAuth2):
		mech = sasl.XOAuth2
	default:
		c.writeln(`NO "Unsupported authentication mechanism."`)
		return nil
	}
	var resp []byte // nil: no initial response
	if len(cmd.args) == 2 {
		var err error
		if resp, err = base64.StdEncoding.DecodeString(cmd.args[1].s); err != nil {
			return c.badCommand("Invalid base64 in initial response")
		}
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
	for {
		chal, done, err := srv.Next(resp)
		if err != nil {
			return c.authFailed(a, err)
		}
		if done {
			return c.loggedIn(a)
		}
		// RFC 5804 §2.1: a challenge is a string of base64, "" for an empty one.
		c.writeln(sieveString(base64.StdEncoding.EncodeToString(chal)))
		if err := c.BW.Flush(); err != nil {
			return err
		}
		// Both mechanisms' only non-empty challenge is the error challenge.
		errorChallenge := len(chal) > 0
		if errorChallenge {
			// RFC 7628 §3.2.3: the client replies to the error challenge; some never do, so
			// wait only briefly.
			replyBy := time.Now().Add(c.s.Config.errorReplyTimeout())
			if replyBy.After(deadline) {
				replyBy = deadline
			}
			c.NC.SetReadDeadline(replyBy)
		}
		items, err := c.reader().read()
		c.NC.SetReadDeadline(deadline)
		var bad *badInput
		switch {
		case errorChallenge && (err == nil || errors.As(err, &bad) && !errors.Is(err, errFatal) || frontend.IsTimeout(err)):
			// Any reply, or none, ends a failed exchange: never a new attempt.
			_, _, err = srv.Next([]byte{})
			return c.authFailed(a, err)
		case errorChallenge:
			// The client left, or sent what cannot be skipped, after the error challenge: the
			// attempt failed all the same, and is observed as such.
			_, _, ferr := srv.Next([]byte{})
			c.s.Login.Finish(&a.Attempt, ferr)
			_, err = c.inputError(err)
			return err
		case err != nil:
			if done, err := c.inputError(err); done {
				return err
			}
			return nil
		}
		s, ok := oneString(items)
		switch {
		case !ok:
			return c.badCommand("Expected a string holding a SASL response")
		case s.s == "*":
			// RFC 5804 §2.1: the client cancels the exchange; the server answers NO.
			c.writeln(`NO "Authentication cancelled."`)
			return nil
		}
		if resp, err = base64.StdEncoding.DecodeString(s.s); err != nil {
			return c.badCommand("Invalid base64 in response")
		}
	}
}

func equalFold(s, upper string) bool {
	if len(s) != len(upper) {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		if b != upper[i] {
			return false
		}
	}
	return true
}

// loggedIn answers the successful authentication and relays the session. RFC 5804 §2.1: the
// server sends capabilities after a login only when a SASL security layer was negotiated,
// which OAUTHBEARER and XOAUTH2 have none of; a client that wants the backend's
// post-authentication capabilities asks, and the backend answers.
func (c *conn) loggedIn(a *attempt) error {
	sess := a.Session
	o := c.s.Login.Finish(&a.Attempt, nil)
	c.LoggedIn(o.Identity.User)
	c.writeln(`OK "Logged in."`)
	if err := c.BW.Flush(); err != nil {
		sess.Close()
		return err
	}
	a.Cancel()
	bbr := sess.Reader
	sess.Reader = nil // the splice's: its buffer is freed once drained
	return c.Splice(sess.Conn, bbr, &responseBoundary{})
}

// failureReplies is the ManageSieve column of DESIGN.md's error table (RFC 5804 §1.3
// response codes), by the login pipeline's outcome. Malformed input is answered by
// badCommand.
var failureReplies = map[proxy.Kind]string{
	proxy.Refused:            `NO "Authentication failed."`,
	proxy.IdPUnavailable:     `NO (TRYLATER) "Token validation is temporarily unavailable."`,
	proxy.BackendUnavailable: `NO (TRYLATER) "Sieve service temporarily unavailable."`,
	proxy.BackendRefused:     `NO (TRYLATER) "Sieve service temporarily unavailable."`,
	proxy.Delayed:            `NO (TRYLATER) "Temporary failure."`,
	proxy.Error:              `NO (TRYLATER) "Temporary failure."`,
}

// authFailed answers a failed authentication from the pipeline's outcome.
func (c *conn) authFailed(a *attempt, err error) error {
	o := c.s.Login.Finish(&a.Attempt, err)
	if o.Kind == proxy.Malformed {
		return c.badCommand("Malformed " + a.Mechanism + " message")
	}
	c.writeln(failureReplies[o.Kind])
	return nil
}
