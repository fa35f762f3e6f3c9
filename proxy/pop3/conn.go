package pop3

import (
	"bufio"
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

// errQuit and errTooManyBad end a connection's AUTHORIZATION state: QUIT, or too many bad
// commands (a login ends it with frontend.ErrSpliced). errLineTooLong is a line over
// Config.MaxLineLength, answered -ERR.
var (
	errQuit        = errors.New("pop3: quit")
	errTooManyBad  = errors.New("pop3: too many invalid commands")
	errLineTooLong = errors.New("pop3: line too long")
)

// Replies that are not answers to one command: the greeting (RFC 1939 §4; no <timestamp>,
// which would offer APOP) and the last line of a connection that took too long or is ended
// by a drain.
const (
	greeting        = "+OK saslgate ready."
	replyTimeout    = "-ERR Disconnected: authentication took too long"
	replyShutdown   = "-ERR [SYS/TEMP] Server shutting down, please reconnect"
	replyTooManyBad = "-ERR Too many invalid commands"
	// capaFollows starts CAPA's multi-line response (RFC 2449 §5).
	capaFollows = "+OK Capability list follows"
)

// run drives the AUTHORIZATION state until the client quits, fails, or logs in and the
// splice takes the connection over. One deadline bounds the whole state.
func (c *conn) run() error {
	deadline := time.Now().Add(c.s.Config.preauthTimeout())
	c.Raw.SetDeadline(deadline)
	if c.s.Listener.TLS == proxy.TLSImplicit {
		if err := c.startTLS(deadline); err != nil {
			return err
		}
	} else {
		c.SetStream(c.Raw)
	}
	c.reply(greeting)
	if err := c.BW.Flush(); err != nil {
		return err
	}
	return c.serve(deadline)
}

// serve reads and answers commands until the connection ends.
func (c *conn) serve(deadline time.Time) error {
	for {
		line, err := readLine(c.BR, c.s.Config.maxLineLength())
		switch {
		case errors.Is(err, errLineTooLong):
			err = c.badCommand("Line too long")
		case err != nil:
			if frontend.IsTimeout(err) {
				c.NC.SetWriteDeadline(time.Now().Add(time.Second))
				if c.Ending() {
					c.reply(replyShutdown)
				} else {
					c.reply(replyTimeout)
				}
				c.BW.Flush()
			}
			return err
		default:
			err = c.handle(string(line), deadline)
		}
		if err != nil {
			return err
		}
		if err := c.BW.Flush(); err != nil {
			return err
		}
	}
}

// startTLS runs the TLS handshake within the listener's handshake timeout, then gives the
// connection back its pre-authentication deadline.
func (c *conn) startTLS(preauth time.Time) error {
	if err := c.StartTLS(c.s.fe.ConnTLS(), c.s.Listener, preauth); err != nil {
		return fmt.Errorf("pop3: TLS handshake: %w", err)
	}
	return nil
}

// reply writes one reply line; the text never holds the client's bytes.
func (c *conn) reply(line string) {
	c.BW.WriteString(line)
	c.BW.WriteString("\r\n")
}

// badCommand answers -ERR and counts the command; the client that reaches
// Config.MaxBadCommands gets a last -ERR and is disconnected: before authentication, a
// stream of junk is more likely another protocol than POP3 (cross-protocol attacks).
func (c *conn) badCommand(text string) error {
	c.bad++
	if c.bad >= c.s.Config.maxBadCommands() {
		c.reply(replyTooManyBad)
		c.BW.Flush()
		return errTooManyBad
	}
	c.reply("-ERR " + text)
	return nil
}

// capabilities is the CAPA list (RFC 2449 §6, RFC 5034 §3, RFC 2595 §4, RFC 3206 §6): SASL
// and USER only over TLS, STLS only before it on a STARTTLS listener. No PIPELINING, TOP or
// UIDL: they describe the backend's TRANSACTION state, which saslgate does not know before
// the login; a CAPA after the login reaches the backend and gets its own list.
func (c *conn) capabilities() []string {
	var caps []string
	if !c.TLS && c.s.Listener.TLS == proxy.TLSStartTLS {
		caps = append(caps, "STLS")
	}
	if c.TLS {
		caps = append(caps, "SASL "+sasl.OAuthBearer+" "+sasl.XOAuth2)
		if c.s.Config.AllowTokenAsPassword {
			caps = append(caps, "USER")
		}
	}
	return append(caps, "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION saslgate")
}

// handle answers one command line. Keywords are case-insensitive (RFC 2449 §3).
func (c *conn) handle(line string, deadline time.Time) error {
	user := c.user
	c.user = ""
	keyword, args, _ := strings.Cut(line, " ")
	switch strings.ToUpper(keyword) {
	case "CAPA":
		if args != "" {
			return c.badCommand("CAPA takes no arguments")
		}
		c.reply(capaFollows)
		for _, cp := range c.capabilities() {
			c.reply(cp)
		}
		c.reply(".")
	case "NOOP":
		if args != "" {
			return c.badCommand("NOOP takes no arguments")
		}
		c.reply("+OK")
	case "QUIT":
		if args != "" {
			return c.badCommand("QUIT takes no arguments")
		}
		c.reply("+OK Bye")
		c.BW.Flush()
		return errQuit
	case "STLS":
		return c.stls(args, deadline)
	case "AUTH":
		return c.auth(args, deadline)
	case "USER":
		if c.refusePassword() {
			return nil
		}
		if args == "" {
			return c.badCommand("USER takes a user name")
		}
		c.user = args
		c.reply("+OK Send the access token with PASS")
	case "PASS":
		if c.refusePassword() {
			return nil
		}
		if user == "" {
			c.reply("-ERR Send USER first")
			return nil
		}
		if args == "" {
			return c.badCommand("PASS takes the access token")
		}
		return c.pass(user, args, deadline)
	case "APOP":
		c.reply("-ERR APOP is not available; use AUTH OAUTHBEARER or XOAUTH2")
	case "STAT", "LIST", "RETR", "DELE", "RSET", "TOP", "UIDL", "LAST":
		return c.badCommand("Authenticate first")
	default:
		return c.badCommand("Unknown command")
	}
	return nil
}

// stls runs STLS (RFC 2595 §4): +OK, then the handshake; the state stays AUTHORIZATION.
func (c *conn) stls(args string, deadline time.Time) error {
	switch {
	case args != "":
		return c.badCommand("STLS takes no arguments")
	case c.TLS:
		return c.badCommand("TLS is already active")
	case c.s.Listener.TLS != proxy.TLSStartTLS:
		return c.badCommand("STLS is not available")
	}
	c.reply("+OK Begin TLS negotiation now")
	if err := c.BW.Flush(); err != nil {
		return err
	}
	// Anything the client sent behind STLS came in the clear and may be an injection
	// (CVE-2011-0411): the reader holding it is dropped.
	if n := c.BR.Buffered(); n > 0 {
		c.Log.Warn("discarded plaintext sent after STLS", "bytes", n)
	}
	return c.startTLS(deadline)
}

// refusePassword answers USER and PASS unless the token may be the password over TLS. RFC
// 2595 §4 and DESIGN.md: nothing that carries a credential before STLS.
func (c *conn) refusePassword() bool {
	switch {
	case !c.TLS:
		c.reply("-ERR Use STLS first")
	case !c.s.Config.AllowTokenAsPassword:
		c.reply("-ERR USER and PASS are disabled; use AUTH OAUTHBEARER or XOAUTH2")
	default:
		return false
	}
	return true
}

// pass handles PASS with the access token as the password of user.
func (c *conn) pass(user, token string, deadline time.Time) error {
	a, err := c.begin("LOGIN", deadline)
	if err != nil {
		return err
	}
	defer a.Cancel()
	if err := a.Auth(sasl.Credentials{Mechanism: "LOGIN", AuthzID: user, Token: token, CBFlag: 'n'}); err != nil {
		return c.authFailed(a, err)
	}
	return c.loggedIn(a)
}

// attempt is one authentication attempt of the login pipeline and the backend session it
// opened.
type attempt = frontend.Attempt[*backends.POP3Session]

// begin starts an attempt after the failed-authentication delay (frontend.Begin).
func (c *conn) begin(mech string, deadline time.Time) (*attempt, error) {
	c.attempts++
	return frontend.Begin(c.s.Login, proxy.Attempt{
		Protocol: Protocol.Name, Mechanism: mech, Listener: c.s.Listener, Conn: c.Bind,
		Client: c.Client, Log: c.Log, Observer: c.Obs, Number: c.attempts,
	}, deadline, c.s.fe.Sessions.Done(), c.s.dial)
}

// auth runs AUTH (RFC 5034 §4): a mechanism and an optional initial response ("=" for an
// empty one), then "+ " challenges and base64 responses until the exchange ends; "*" cancels.
func (c *conn) auth(args string, deadline time.Time) error {
	if !c.TLS {
		// RFC 2595 §4; not [AUTH] (RFC 3206 §4), which would tell the client its
		// credentials are wrong.
		c.reply("-ERR Use STLS first")
		return nil
	}
	fields := strings.Split(args, " ")
	if args == "" || len(fields) > 2 || fields[0] == "" || len(fields) == 2 && fields[1] == "" {
		return c.badCommand("AUTH takes a mechanism and an optional initial response")
	}
	mech := strings.ToUpper(fields[0])
	if mech != sasl.OAuthBearer && mech != sasl.XOAuth2 {
		c.reply("-ERR Unsupported authentication mechanism")
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
	if len(fields) == 2 {
		if fields[1] == "=" {
			resp = []byte{}
		} else if resp, err = decodeResponse(fields[1]); err != nil {
			return c.badCommand("Invalid base64 in initial response")
		}
	}
	for {
		chal, done, err := srv.Next(resp)
		if err != nil {
			return c.authFailed(a, err)
		}
		if done {
			return c.loggedIn(a)
		}
		// RFC 5034 §4: the empty challenge is exactly "+ ".
		c.reply("+ " + base64.StdEncoding.EncodeToString(chal))
		if err := c.BW.Flush(); err != nil {
			return err
		}
		// Both mechanisms' only non-empty challenge is the error challenge.
		errorChallenge := len(chal) > 0
		if errorChallenge {
			// RFC 7628 §3.2.3: the client replies to the error challenge; some never do,
			// so wait only briefly.
			replyBy := time.Now().Add(c.s.Config.errorReplyTimeout())
			if replyBy.After(deadline) {
				replyBy = deadline
			}
			c.NC.SetReadDeadline(replyBy)
		}
		line, err := readLine(c.BR, c.s.Config.maxLineLength())
		c.NC.SetReadDeadline(deadline)
		switch {
		case errorChallenge && (err == nil || errors.Is(err, errLineTooLong) || frontend.IsTimeout(err)):
			// Any reply, or none, ends a failed exchange: never a new attempt.
			_, _, err = srv.Next([]byte{})
			return c.authFailed(a, err)
		case errors.Is(err, errLineTooLong):
			return c.badCommand("Line too long")
		case errorChallenge && err != nil:
			// The client left after the error challenge: the attempt failed all the same,
			// and is observed as such, with nobody left to answer.
			_, _, ferr := srv.Next([]byte{})
			c.s.Login.Finish(&a.Attempt, ferr)
			return err
		case err != nil:
			return err
		case string(line) == "*":
			c.reply("-ERR AUTH cancelled")
			return nil
		}
		if resp, err = decodeResponse(string(line)); err != nil {
			return c.badCommand("Invalid base64 in response")
		}
	}
}

// decodeResponse decodes a base64 client response; the empty line is the empty response.
func decodeResponse(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		// The decoder would skip them.
		return nil, errors.New("pop3: CR or LF in base64")
	}
	return base64.StdEncoding.DecodeString(s)
}

// loggedIn answers the successful login and relays the session: the client's bytes pipelined
// behind it, still in c.BR, go to the backend first.
func (c *conn) loggedIn(a *attempt) error {
	sess := a.Session
	o := c.s.Login.Finish(&a.Attempt, nil)
	c.LoggedIn(o.Identity.User)
	c.reply("+OK Logged in.")
	if err := c.BW.Flush(); err != nil {
		sess.Close()
		return err
	}
	a.Cancel()
	bbr := sess.Reader
	sess.Reader = nil // the splice's: its buffer is freed once drained
	return c.Splice(sess.Conn, bbr, nil)
}

// failureReplies is the POP3 column of DESIGN.md's error table (RFC 3206 response codes), by
// the login pipeline's outcome. Malformed input is answered by badCommand.
var failureReplies = map[proxy.Kind]string{
	proxy.Refused:            "-ERR [AUTH] Authentication failed",
	proxy.IdPUnavailable:     "-ERR [SYS/TEMP] Token validation is temporarily unavailable",
	proxy.BackendUnavailable: "-ERR [SYS/TEMP] Mailbox temporarily unavailable",
	proxy.BackendRefused:     "-ERR [SYS/TEMP] Mailbox temporarily unavailable",
	proxy.Delayed:            "-ERR [SYS/TEMP] Temporary failure",
	proxy.Error:              "-ERR [SYS/TEMP] Temporary failure",
}

// authFailed answers a failed authentication from the pipeline's outcome. RFC 5034 §4: the
// state is as if the AUTH had not been issued.
func (c *conn) authFailed(a *attempt, err error) error {
	o := c.s.Login.Finish(&a.Attempt, err)
	if o.Kind == proxy.Malformed {
		return c.badCommand("Malformed " + a.Mechanism + " message")
	}
	c.reply(failureReplies[o.Kind])
	return nil
}

// readLine reads one line and strips CRLF (a bare LF is tolerated). A line longer than max
// is consumed up to its LF and reported as errLineTooLong, so the stream stays in step.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+2 {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return nil, err
			}
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
