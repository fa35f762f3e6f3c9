package backends

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// IMAPSession is a logged-in backend IMAP connection ready to splice. Its deadlines are
// cleared; the caller owns Conn and must close it.
type IMAPSession struct {
	// Conn is the raw or TLS connection.
	Conn net.Conn
	// Reader reads Conn and may already hold bytes the backend sent after the tagged OK of the
	// login; the splice must copy Reader's buffered bytes before reading Conn.
	Reader *bufio.Reader
	// Capabilities are the backend's post-auth capabilities, from the [CAPABILITY] code of
	// the login's tagged OK or a CAPABILITY command, without AUTH=*, LOGINDISABLED, STARTTLS
	// and SASL-IR.
	Capabilities []string
}

// Close closes the backend connection.
func (s *IMAPSession) Close() error { return s.Conn.Close() }

// DialIMAP connects to the backend, secures the connection as configured and logs in as user,
// all within cfg.Timeout and ctx: with secret (logins "plain" and "login"), or as
// cfg.MasterUser with the secret in cfg.MasterSecretFile, read now (logins "master" and
// "master_separator"; secret unused), or with secret as the client's access token in
// AUTHENTICATE OAUTHBEARER or XOAUTH2 (login "token"). With cfg.ForwardClientAddress,
// client's addresses go first in an ID command (Dovecot's x-originating-ip and friends). The
// username and secret are checked before anything is sent. Errors wrap ErrRejected (the backend, or this package,
// refused this login) or ErrUnavailable (anything else); neither ever contains a secret.
func DialIMAP(ctx context.Context, cfg Config, user string, secret Secret, client Client) (*IMAPSession, error) {
	cfg, creds, err := cfg.prepareLogin("imap", user, secret)
	if err != nil {
		return nil, err
	}
	c := &imapClient{loginState: newLoginState("imap", cfg, user, creds, client)}
	var sess *IMAPSession
	err = dial(ctx, cfg, "imap", func(ctx context.Context, raw net.Conn, tlsCfg *tls.Config) (net.Conn, error) {
		c.ctx = ctx
		var err error
		if sess, err = c.run(raw, tlsCfg); err != nil {
			return nil, err
		}
		return sess.Conn, nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// imapClient is the state of one DialIMAP call.
type imapClient struct {
	loginState

	conn net.Conn
	br   *bufio.Reader
	tags int
	// caps is the current capability list, nil when unknown (before the first one, and after
	// STARTTLS, RFC 9051 §6.2.1: the client must discard cached capabilities).
	caps []string
	// seenCaps is the last untagged CAPABILITY data seen by await.
	seenCaps []string
	// extra holds strings to redact from backend text besides the secret (the PLAIN message).
	extra []string
	// challenge is the decoded error challenge of login "token", for messages.
	challenge string
	// pending is a command written with the next one (the ID), idTag its tag, whose
	// completion await reads first.
	pending string
	idTag   string
}

func (c *imapClient) run(raw net.Conn, tlsCfg *tls.Config) (*IMAPSession, error) {
	c.conn = raw
	if c.cfg.TLS == "implicit" {
		if err := c.handshake(tlsCfg); err != nil {
			return nil, err
		}
	}
	c.br = bufio.NewReader(c.conn)

	greeting, err := readResponse(c.br)
	if err != nil {
		return nil, c.unavailable("greeting", err)
	}
	switch {
	case greeting.tag == "*" && greeting.kind == "OK":
		if greeting.code == "CAPABILITY" {
			c.caps = capabilityFields(greeting.codeArg)
		}
	case greeting.tag == "*" && greeting.kind == "BYE":
		return nil, c.unavailable("greeting", fmt.Errorf("BYE %s", c.sanitize(greeting.text)))
	case greeting.tag == "*" && greeting.kind == "PREAUTH":
		return nil, c.unavailable("greeting", errors.New("PREAUTH: the backend logged in on its own, not as the user"))
	default:
		return nil, c.unavailable("greeting", errors.New("not an IMAP greeting"))
	}

	if c.cfg.TLS == "starttls" {
		if err := c.startTLS(tlsCfg); err != nil {
			return nil, err
		}
	}
	if c.caps == nil {
		if err := c.capability(); err != nil {
			return nil, err
		}
	}

	if c.cfg.ForwardClientAddress && c.client.Addr.IsValid() {
		c.id()
	}
	var done *response
	c.seenCaps = nil
	switch c.cfg.Login {
	case LoginLogin, LoginMasterSeparator:
		done, err = c.login()
	case LoginToken:
		done, err = c.authenticateToken()
	default:
		done, err = c.authenticatePlain()
	}
	if err != nil {
		return nil, err
	}
	if done.kind != "OK" {
		text := done.kind
		if done.code != "" {
			text += " [" + strings.TrimSpace(done.code+" "+done.codeArg) + "]"
		}
		if done.text != "" {
			text += " " + done.text
		}
		if c.challenge != "" {
			text += " after the error challenge " + c.challenge
		}
		text = c.sanitize(text)
		if done.kind == "NO" && done.code == "UNAVAILABLE" {
			return nil, c.unavailable("login", errors.New(text))
		}
		return nil, &loginError{
			kind: ErrRejected,
			msg:  fmt.Sprintf("backends: imap backend %s rejected login for %s: %s", c.cfg.Address, c.cfg.loginFor(c.user), text),
		}
	}

	// RFC 9051 §6.2.2/§6.2.3: the tagged OK may carry the new capabilities; an untagged
	// CAPABILITY during the login counts too; otherwise ask.
	if done.code == "CAPABILITY" {
		c.caps = capabilityFields(done.codeArg)
	} else if c.seenCaps != nil {
		c.caps = c.seenCaps
	} else if err := c.capability(); err != nil {
		return nil, err
	}
	return &IMAPSession{Conn: c.conn, Reader: c.br, Capabilities: postAuthCapabilities(c.caps)}, nil
}

func (c *imapClient) handshake(tlsCfg *tls.Config) error {
	tc := tls.Client(c.conn, tlsCfg)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return c.unavailable("tls handshake", err)
	}
	c.conn = tc
	return nil
}

func (c *imapClient) startTLS(tlsCfg *tls.Config) error {
	tag := c.nextTag()
	if err := c.write(tag + " STARTTLS\r\n"); err != nil {
		return c.unavailable("starttls", err)
	}
	resp, err := c.await(tag, false)
	if err != nil {
		return c.unavailable("starttls", err)
	}
	if resp.kind != "OK" {
		return c.unavailable("starttls", fmt.Errorf("backend answered %s %s", resp.kind, c.sanitize(resp.text)))
	}
	// Anything buffered now was sent in clear text before the handshake and could have been
	// injected (CVE-2011-0411 class): drop it with the old reader.
	c.caps = nil
	if err := c.handshake(tlsCfg); err != nil {
		return err
	}
	c.br = bufio.NewReader(c.conn)
	return nil
}

// id sends the client's addresses in an ID command before the login (RFC 2971), with the
// field names Dovecot honours from login_trusted_networks. A backend without ID, or refusing
// it, still gets the login: the forwarding is informational. The ID goes out in one write
// with the login's first line (pipelined, RFC 9051 §5.5), saving a round trip.
func (c *imapClient) id() {
	if !hasCapability(c.caps, "ID") {
		return
	}
	fields := []string{"x-originating-ip", c.client.Addr.Addr().String(), "x-originating-port", strconv.Itoa(int(c.client.Addr.Port()))}
	if c.client.Local.IsValid() {
		fields = append(fields, "x-connected-ip", c.client.Local.Addr().String(), "x-connected-port", strconv.Itoa(int(c.client.Local.Port())))
	}
	tag := c.nextTag()
	c.pending, c.idTag = tag+` ID ("`+strings.Join(fields, `" "`)+"\")\r\n", tag
}

func (c *imapClient) capability() error {
	tag := c.nextTag()
	if err := c.write(tag + " CAPABILITY\r\n"); err != nil {
		return c.unavailable("capability", err)
	}
	c.seenCaps = nil
	resp, err := c.await(tag, false)
	if err != nil {
		return c.unavailable("capability", err)
	}
	if resp.kind != "OK" || c.seenCaps == nil {
		return c.unavailable("capability", fmt.Errorf("no capability list: %s %s", resp.kind, c.sanitize(resp.text)))
	}
	c.caps = c.seenCaps
	return nil
}

// authenticatePlain runs AUTHENTICATE PLAIN (RFC 4616 message: authzid, empty but with login
// "master", authcid and password) with the message as an initial response when the backend
// offers SASL-IR (RFC 4959), else after its empty "+" challenge. It returns the tagged
// completion.
func (c *imapClient) authenticatePlain() (*response, error) {
	if !hasCapability(c.caps, "AUTH=PLAIN") {
		hint := `(set login: "login"?)`
		if c.cfg.Login == LoginMaster {
			hint = `(login "master" needs it; "master_separator" uses LOGIN)`
		}
		return nil, c.unavailable("login", errors.New("backend does not offer AUTH=PLAIN "+hint))
	}
	msg := base64.StdEncoding.EncodeToString([]byte(c.authzid + "\x00" + c.authcid + "\x00" + c.secret))
	c.extra = append(c.extra, msg)
	tag := c.nextTag()
	if hasCapability(c.caps, "SASL-IR") {
		if err := c.write(tag + " AUTHENTICATE PLAIN " + msg + "\r\n"); err != nil {
			return nil, c.unavailable("login", err)
		}
		return c.awaitLogin(tag, false)
	}
	if err := c.write(tag + " AUTHENTICATE PLAIN\r\n"); err != nil {
		return nil, c.unavailable("login", err)
	}
	resp, err := c.awaitLogin(tag, true)
	if err != nil || resp.tag != "+" {
		return resp, err
	}
	if err := c.write(msg + "\r\n"); err != nil {
		return nil, c.unavailable("login", err)
	}
	return c.awaitLogin(tag, false)
}

// authenticateToken runs AUTHENTICATE with login "token"'s mechanism and the client's token
// (RFC 7628 §3.1, or XOAUTH2), as an initial response when the backend offers SASL-IR
// (RFC 4959), else after its empty "+" challenge. A "+" after the message is the error
// challenge (RFC 7628 §3.2.2): it is answered as the mechanism requires (§3.2.3), and the
// backend's NO then rejects the login. It returns the tagged completion.
func (c *imapClient) authenticateToken() (*response, error) {
	mech := c.cfg.tokenMechanism()
	if !hasCapability(c.caps, "AUTH="+mech) {
		return nil, c.unavailable("login", fmt.Errorf("backend does not offer AUTH=%s (login \"token\", token_mechanism %q)", mech, strings.ToLower(mech)))
	}
	msg := base64.StdEncoding.EncodeToString(c.cfg.tokenResponse(c.authzid, Secret(c.secret)))
	c.extra = append(c.extra, msg)
	tag := c.nextTag()
	ir := hasCapability(c.caps, "SASL-IR")
	cmd := tag + " AUTHENTICATE " + mech
	if ir {
		cmd += " " + msg
	}
	if err := c.write(cmd + "\r\n"); err != nil {
		return nil, c.unavailable("login", err)
	}
	if !ir {
		resp, err := c.awaitLogin(tag, true)
		if err != nil || resp.tag != "+" {
			return resp, err
		}
		if err := c.write(msg + "\r\n"); err != nil {
			return nil, c.unavailable("login", err)
		}
	}
	resp, err := c.awaitLogin(tag, true)
	if err != nil || resp.tag != "+" {
		return resp, err
	}
	if b, err := base64.StdEncoding.DecodeString(resp.text); err == nil {
		c.challenge = string(b)
	}
	answer := base64.StdEncoding.EncodeToString(c.cfg.tokenErrorAnswer())
	if err := c.write(answer + "\r\n"); err != nil {
		return nil, c.unavailable("login", err)
	}
	resp, err = c.awaitLogin(tag, false)
	if err == nil && resp.kind == "OK" {
		return nil, c.unavailable("login", errors.New("backend accepted the login after its error challenge"))
	}
	return resp, err
}

// login runs LOGIN with each argument a quoted string or, when it holds bytes a quoted string
// cannot carry, a synchronising literal (RFC 9051 §4.3, §6.2.3).
func (c *imapClient) login() (*response, error) {
	if hasCapability(c.caps, "LOGINDISABLED") {
		return nil, c.unavailable("login", errors.New("backend advertises LOGINDISABLED (use tls, or login: \"plain\")"))
	}
	tag := c.nextTag()
	// Each segment but the last ends with a literal announcement "{n}\r\n" and waits for "+".
	var segments []string
	cur := tag + " LOGIN"
	for _, arg := range []string{c.authcid, c.secret} {
		cur += " "
		if needsLiteral(arg) {
			segments = append(segments, cur+"{"+strconv.Itoa(len(arg))+"}\r\n")
			cur = arg
		} else {
			cur += `"` + arg + `"`
		}
	}
	segments = append(segments, cur+"\r\n")
	for i, seg := range segments {
		if err := c.write(seg); err != nil {
			return nil, c.unavailable("login", err)
		}
		last := i == len(segments)-1
		resp, err := c.awaitLogin(tag, !last)
		if err != nil || last || resp.tag != "+" {
			return resp, err
		}
	}
	panic("unreachable")
}

// needsLiteral reports whether s cannot be sent as a quoted string: CR, LF or other controls,
// quoted-specials, or 8-bit bytes (not allowed in IMAP4rev1 quoted strings).
func needsLiteral(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f || b == '"' || b == '\\' {
			return true
		}
	}
	return false
}

// awaitLogin is await for the login command, noting an untagged CAPABILITY on the way.
func (c *imapClient) awaitLogin(tag string, allowCont bool) (*response, error) {
	resp, err := c.await(tag, allowCont)
	if err != nil {
		return nil, c.unavailable("login", err)
	}
	return resp, nil
}

// await reads responses until the tagged completion of tag, or a continuation request when
// allowCont. Untagged CAPABILITY data is kept in seenCaps; an untagged BYE ends the session;
// other untagged data is skipped.
func (c *imapClient) await(tag string, allowCont bool) (*response, error) {
	if id := c.idTag; id != "" {
		c.idTag = ""
		if _, err := c.await(id, false); err != nil {
			return nil, fmt.Errorf("id: %w", err)
		}
	}
	for {
		resp, err := readResponse(c.br)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.tag == tag:
			return resp, nil
		case resp.tag == "+":
			if !allowCont {
				return nil, errors.New("unexpected continuation request")
			}
			return resp, nil
		case resp.tag != "*":
			return nil, fmt.Errorf("response for unknown tag %.20q", resp.tag)
		case resp.kind == "BYE":
			return nil, fmt.Errorf("BYE %s", c.sanitize(resp.text))
		case resp.kind == "CAPABILITY":
			c.seenCaps = capabilityFields(resp.text)
		}
	}
}

func (c *imapClient) nextTag() string {
	c.tags++
	return "A" + strconv.Itoa(c.tags)
}

func (c *imapClient) write(s string) error {
	s, c.pending = c.pending+s, ""
	_, err := c.conn.Write([]byte(s))
	return err
}

// sanitize makes backend text safe to log, redacting the secret and the PLAIN message.
func (c *imapClient) sanitize(s string) string {
	return sanitize(s, append([]string{c.secret}, c.extra...)...)
}
