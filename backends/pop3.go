package backends

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// POP3Session is a logged-in backend POP3 connection (TRANSACTION state, RFC 1939 §5) ready
// to splice. Its deadlines are cleared; the caller owns Conn and must close it.
type POP3Session struct {
	// Conn is the raw or TLS connection.
	Conn net.Conn
	// Reader reads Conn and may already hold bytes the backend sent after the +OK of the
	// login; the splice must copy Reader's buffered bytes before reading Conn.
	Reader *bufio.Reader
}

// Close closes the backend connection.
func (s *POP3Session) Close() error { return s.Conn.Close() }

// Bounds of what DialPOP3 reads from a backend.
const (
	// maxPOP3Line bounds one backend line. RFC 2449 §4 caps responses at 512 octets; the
	// margin is for servers that do not keep to it.
	maxPOP3Line = 4 << 10
	// maxPOP3CapaLines bounds the capability lines of one CAPA response.
	maxPOP3CapaLines = 64
	// maxPOP3Command is the longest command line, CRLF included (RFC 2449 §4). RFC 5034 §4: a
	// client "MUST NOT use the initial-response parameter" of an AUTH command that would
	// exceed it; the response then follows the server's "+ ".
	maxPOP3Command = 255
)

// DialPOP3 connects to the backend, secures the connection as configured (STLS, RFC 2595 §4,
// or implicit TLS) and logs in as user, all within cfg.Timeout and ctx: with AUTH PLAIN
// (RFC 5034, RFC 4616) and secret (login "plain"); with USER and PASS (RFC 1939 §7) and
// secret (login "login"); as cfg.MasterUser with the secret in cfg.MasterSecretFile, read now,
// in AUTH PLAIN with the user as authorization identity (login "master") or in USER
// user+cfg.MasterSeparator+cfg.MasterUser and PASS (login "master_separator"); or with secret
// as the client's access token in AUTH OAUTHBEARER or XOAUTH2 (login "token"). The SASL
// message goes on the AUTH line when the line stays within 255 octets, else after the
// backend's "+ ". With cfg.ForwardClientAddress and a backend that offers XCLIENT (Dovecot,
// from its login_trusted_networks: in its greeting's [XCLIENT] code or in CAPA), the client's
// address goes first in XCLIENT ADDR= PORT=. The username and secret are checked before
// anything is sent.
//
// Errors wrap ErrRejected (the backend answered the login -ERR, or this package refused it)
// or ErrUnavailable (anything else, including an -ERR with the RFC 3206 code [SYS/TEMP] or
// the RFC 2449 codes [IN-USE] and [LOGIN-DELAY], which say the login may work later);
// neither ever contains a secret.
func DialPOP3(ctx context.Context, cfg Config, user string, secret Secret, client Client) (*POP3Session, error) {
	cfg, creds, err := cfg.prepareLogin("pop3", user, secret)
	if err != nil {
		return nil, err
	}
	if cfg.Login == LoginLogin && strings.ContainsAny(secret.Reveal(), "\r\n") {
		// PASS carries the secret on a command line of its own (RFC 1939 §7).
		return nil, &loginError{kind: ErrRejected, msg: fmt.Sprintf("backends: not sent to the pop3 backend: secret for %q contains CR or LF, which PASS cannot carry", user)}
	}
	c := &pop3Client{loginState: newLoginState("pop3", cfg, user, creds, client)}
	var sess *POP3Session
	err = dial(ctx, cfg, "pop3", func(ctx context.Context, raw net.Conn, tlsCfg *tls.Config) (net.Conn, error) {
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

// pop3Client is the state of one DialPOP3 call.
type pop3Client struct {
	loginState

	conn net.Conn
	br   *bufio.Reader
	// caps is the CAPA list (RFC 2449 §5), one capability line each; nil when the backend
	// has none (an RFC 1939-only server answers CAPA -ERR).
	caps [][]string
	// xclient: the greeting carried Dovecot's [XCLIENT] code.
	xclient bool
	// extra holds strings to redact from backend text besides the secret (SASL messages).
	extra []string
	// challenge is the decoded error challenge of login "token", for messages.
	challenge string
}

// pop3Reply is one backend reply line: +OK, -ERR or a continuation request.
type pop3Reply struct {
	ok, cont bool
	code     string // -ERR's response code, upper case, without brackets (RFC 2449 §8)
	text     string // the rest of the line
}

// String is the reply as the backend sent it (its response code upper-cased).
func (r *pop3Reply) String() string {
	s := "-ERR"
	switch {
	case r.ok:
		s = "+OK"
	case r.cont:
		s = "+"
	}
	if r.code != "" {
		s += " [" + r.code + "]"
	}
	if r.text != "" {
		s += " " + r.text
	}
	return s
}

func (c *pop3Client) run(raw net.Conn, tlsCfg *tls.Config) (*POP3Session, error) {
	c.conn = raw
	if c.cfg.TLS == "implicit" {
		if err := c.handshake(tlsCfg); err != nil {
			return nil, err
		}
	}
	c.br = bufio.NewReader(c.conn)

	// RFC 1939 §4: the greeting is one positive line.
	greeting, err := c.read(false)
	if err != nil {
		return nil, c.unavailable("greeting", err)
	}
	if !greeting.ok {
		return nil, c.unavailable("greeting", errors.New(c.sanitize(greeting.String())))
	}
	c.xclient = strings.HasPrefix(strings.ToUpper(greeting.text), "[XCLIENT]")

	if c.cfg.TLS == "starttls" {
		if err := c.startTLS(tlsCfg); err != nil {
			return nil, err
		}
	}
	if err := c.capa(); err != nil {
		return nil, err
	}
	if c.cfg.ForwardClientAddress && c.client.Addr.IsValid() && (c.xclient || c.hasCapa("XCLIENT")) {
		if err := c.forwardClient(); err != nil {
			return nil, err
		}
	}

	var done *pop3Reply
	switch c.cfg.Login {
	case LoginLogin, LoginMasterSeparator:
		done, err = c.userPass()
	case LoginToken:
		done, err = c.authToken()
	default:
		done, err = c.authPlain()
	}
	if err != nil {
		return nil, err
	}
	if !done.ok {
		text := done.String()
		if c.challenge != "" {
			text += " after the error challenge " + c.challenge
		}
		text = c.sanitize(text)
		if temporaryPOP3Code(done.code) {
			return nil, c.unavailable("login", errors.New(text))
		}
		return nil, &loginError{
			kind: ErrRejected,
			msg:  fmt.Sprintf("backends: pop3 backend %s rejected login for %s: %s", c.cfg.Address, c.cfg.loginFor(c.user), text),
		}
	}
	return &POP3Session{Conn: c.conn, Reader: c.br}, nil
}

// temporaryPOP3Code reports whether an -ERR's response code says the login may work later:
// SYS/TEMP (RFC 3206 §4), IN-USE (the maildrop is locked, RFC 2449 §8.1.1) and LOGIN-DELAY
// (logged in too recently, RFC 2449 §8.1.2), or a subcode of one of them.
func temporaryPOP3Code(code string) bool {
	for _, t := range []string{"SYS/TEMP", "IN-USE", "LOGIN-DELAY"} {
		if code == t || strings.HasPrefix(code, t+"/") {
			return true
		}
	}
	return false
}

func (c *pop3Client) handshake(tlsCfg *tls.Config) error {
	tc := tls.Client(c.conn, tlsCfg)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return c.unavailable("tls handshake", err)
	}
	c.conn = tc
	return nil
}

// startTLS runs STLS (RFC 2595 §4). Capabilities are read afterwards, over TLS.
func (c *pop3Client) startTLS(tlsCfg *tls.Config) error {
	r, err := c.command("STLS", false)
	if err != nil {
		return c.unavailable("stls", err)
	}
	if !r.ok {
		return c.unavailable("stls", fmt.Errorf("backend answered -ERR %s", c.sanitize(r.text)))
	}
	// Anything buffered now was sent in clear text before the handshake and could have been
	// injected (CVE-2011-0411 class): drop it with the old reader.
	if err := c.handshake(tlsCfg); err != nil {
		return err
	}
	c.br = bufio.NewReader(c.conn)
	return nil
}

// capa reads the capability list (RFC 2449 §5). A backend without CAPA answers -ERR: it
// then has no capabilities, so no SASL (RFC 5034 §3 has servers with AUTH list it in CAPA).
func (c *pop3Client) capa() error {
	r, err := c.command("CAPA", false)
	if err != nil {
		return c.unavailable("capa", err)
	}
	if !r.ok {
		return nil
	}
	c.caps = [][]string{}
	for n := 0; ; n++ {
		line, err := c.readLine()
		if err != nil {
			return c.unavailable("capa", err)
		}
		if string(line) == "." {
			return nil
		}
		if n == maxPOP3CapaLines {
			return c.unavailable("capa", fmt.Errorf("more than %d capability lines", maxPOP3CapaLines))
		}
		// RFC 2449 §5: a line starting with "." is byte-stuffed; capability tags are not.
		if f := strings.Fields(string(bytes.TrimPrefix(line, []byte(".")))); len(f) > 0 {
			c.caps = append(c.caps, f)
		}
	}
}

// hasCapa reports whether CAPA listed tag (any case).
func (c *pop3Client) hasCapa(tag string) bool {
	for _, l := range c.caps {
		if strings.EqualFold(l[0], tag) {
			return true
		}
	}
	return false
}

// hasSASL reports whether CAPA's SASL line lists mech (RFC 5034 §3).
func (c *pop3Client) hasSASL(mech string) bool {
	for _, l := range c.caps {
		if strings.EqualFold(l[0], "SASL") {
			for _, m := range l[1:] {
				if strings.EqualFold(m, mech) {
					return true
				}
			}
		}
	}
	return false
}

// forwardClient sends the client's address in Dovecot's XCLIENT (honoured from
// login_trusted_networks). A refusal still gets the login: the forwarding is informational.
func (c *pop3Client) forwardClient() error {
	a := c.client.Addr
	if _, err := c.command("XCLIENT ADDR="+a.Addr().Unmap().String()+" PORT="+strconv.Itoa(int(a.Port())), false); err != nil {
		return c.unavailable("xclient", err)
	}
	return nil
}

// authPlain runs AUTH PLAIN (RFC 5034 §4, RFC 4616 message: authzid, empty but with login
// "master", authcid and password) and returns the final reply.
func (c *pop3Client) authPlain() (*pop3Reply, error) {
	if !c.hasSASL("PLAIN") {
		hint := `(set login: "login"?)`
		if c.cfg.Login == LoginMaster {
			hint = `(login "master" needs it; "master_separator" uses USER and PASS)`
		}
		return nil, c.unavailable("login", errors.New("backend does not offer SASL PLAIN in CAPA "+hint))
	}
	msg := base64.StdEncoding.EncodeToString([]byte(c.authzid + "\x00" + c.authcid + "\x00" + c.secret))
	c.extra = append(c.extra, msg)
	return c.auth("PLAIN", msg)
}

// authToken runs AUTH with login "token"'s mechanism and the client's token (RFC 7628 §3.1,
// or XOAUTH2). A "+ " after the message is the error challenge (RFC 7628 §3.2.2): it is
// answered as the mechanism requires (§3.2.3), and the backend's -ERR then rejects the login.
func (c *pop3Client) authToken() (*pop3Reply, error) {
	mech := c.cfg.tokenMechanism()
	if !c.hasSASL(mech) {
		return nil, c.unavailable("login", fmt.Errorf("backend does not offer SASL %s in CAPA (login \"token\", token_mechanism %q)", mech, strings.ToLower(mech)))
	}
	msg := base64.StdEncoding.EncodeToString(c.cfg.tokenResponse(c.authzid, Secret(c.secret)))
	c.extra = append(c.extra, msg)
	r, err := c.auth(mech, msg)
	if err != nil || !r.cont {
		return r, err
	}
	if b, err := base64.StdEncoding.DecodeString(r.text); err == nil {
		c.challenge = string(b)
	}
	r, err = c.command(base64.StdEncoding.EncodeToString(c.cfg.tokenErrorAnswer()), false)
	switch {
	case err != nil:
		return nil, c.unavailable("login", err)
	case r.ok:
		return nil, c.unavailable("login", errors.New("backend accepted the login after its error challenge"))
	}
	return r, nil
}

// auth sends AUTH mech with msg, on the command line when it fits (RFC 5034 §4), else after
// the backend's empty "+ ". It returns the reply to msg: +OK, -ERR, or (only for tokens,
// whose mechanisms have one) a continuation request.
func (c *pop3Client) auth(mech, msg string) (*pop3Reply, error) {
	cmd := "AUTH " + mech
	if len(cmd)+1+len(msg)+2 <= maxPOP3Command {
		r, err := c.command(cmd+" "+msg, c.cfg.Login == LoginToken)
		if err != nil {
			return nil, c.unavailable("login", err)
		}
		return r, nil
	}
	r, err := c.command(cmd, true)
	if err != nil {
		return nil, c.unavailable("login", err)
	}
	if !r.cont {
		return r, nil
	}
	if r, err = c.command(msg, c.cfg.Login == LoginToken); err != nil {
		return nil, c.unavailable("login", err)
	}
	return r, nil
}

// userPass runs USER and PASS (RFC 1939 §7), refused before anything is sent when CAPA says
// the backend does not take them (RFC 2449 §6.2; Dovecot leaves USER out where it refuses
// plaintext logins).
func (c *pop3Client) userPass() (*pop3Reply, error) {
	if c.caps != nil && !c.hasCapa("USER") {
		hint := `(use tls, or login: "plain")`
		if c.cfg.Login == LoginMasterSeparator {
			hint = `(use tls, or login: "master")`
		}
		return nil, c.unavailable("login", errors.New("backend does not offer USER in CAPA "+hint))
	}
	r, err := c.command("USER "+c.authcid, false)
	if err != nil {
		return nil, c.unavailable("login", err)
	}
	if !r.ok {
		return r, nil
	}
	if r, err = c.command("PASS "+c.secret, false); err != nil {
		return nil, c.unavailable("login", err)
	}
	return r, nil
}

// command writes line and reads its reply; a continuation request is a protocol violation
// unless allowCont.
func (c *pop3Client) command(line string, allowCont bool) (*pop3Reply, error) {
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return nil, err
	}
	return c.read(allowCont)
}

// read reads one reply line (RFC 2449 §3: "+OK" / "-ERR" [SP [resp-code] text], or a
// continuation request "+ " [base64], RFC 5034 §4).
func (c *pop3Client) read(allowCont bool) (*pop3Reply, error) {
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	s := string(line)
	switch {
	case s == "+OK" || strings.HasPrefix(s, "+OK "):
		return &pop3Reply{ok: true, text: strings.TrimPrefix(s[3:], " ")}, nil
	case s == "-ERR" || strings.HasPrefix(s, "-ERR "):
		r := &pop3Reply{text: strings.TrimPrefix(s[4:], " ")}
		if rest, ok := strings.CutPrefix(r.text, "["); ok {
			if code, text, ok := strings.Cut(rest, "]"); ok {
				r.code, r.text = strings.ToUpper(code), strings.TrimPrefix(text, " ")
			}
		}
		return r, nil
	case allowCont && (s == "+" || strings.HasPrefix(s, "+ ")):
		return &pop3Reply{cont: true, text: strings.TrimSpace(strings.TrimPrefix(s, "+"))}, nil
	}
	return nil, fmt.Errorf("not a POP3 reply: %.80q", c.sanitize(s))
}

// readLine reads one line of at most maxPOP3Line bytes, without its CRLF.
func (c *pop3Client) readLine() ([]byte, error) {
	line, err := readLine(c.br, maxPOP3Line)
	if errors.Is(err, errLineTooLong) {
		return nil, fmt.Errorf("response line longer than %d bytes", maxPOP3Line)
	}
	return line, err
}

// sanitize makes backend text safe to log, redacting the secret and the SASL messages.
func (c *pop3Client) sanitize(s string) string {
	return sanitize(s, append([]string{c.secret}, c.extra...)...)
}
