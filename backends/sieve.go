package backends

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/saslgate/saslgate/internal/sievewire"
)

// The bounds of what a ManageSieve backend may send to DialSieve and ProbeSieve.
const (
	maxSieveLine         = 4 << 10  // one line, without the literals it announces
	maxSieveLiteral      = 64 << 10 // one literal (RFC 5804 §4 literal-s2c)
	maxSieveCapabilities = 64       // capability lines in one response
	maxSieveLiterals     = 8        // literals in one response line
	maxSieveChallenges   = 4        // server challenges in one AUTHENTICATE
	// maxSieveQuoted is the longest quoted string sent (RFC 5804 §4: quoted =
	// DQUOTE *1024QUOTED-CHAR DQUOTE); longer strings go as a literal.
	maxSieveQuoted = 1024
)

// SieveCapability is one line of a ManageSieve capability response (RFC 5804 §1.7): a name
// and, for most capabilities, a value ("SIEVE" "fileinto vacation", "VERSION" "1.0";
// "STARTTLS" has none).
type SieveCapability struct {
	// Name is the capability's name as the server spelled it; names are case-insensitive.
	Name string
	// Value is the capability's value; "" when it has none (HasValue false) or an empty one.
	Value    string
	HasValue bool
}

// SieveSession is a logged-in backend ManageSieve connection ready to splice. Its deadlines
// are cleared; the caller owns Conn and must close it.
type SieveSession struct {
	// Conn is the raw or TLS connection.
	Conn net.Conn
	// Reader reads Conn and may already hold bytes the backend sent after the OK of the login;
	// the splice must copy Reader's buffered bytes before reading Conn.
	Reader *bufio.Reader
	// Capabilities are the backend's capabilities as it announced them before the login (after
	// STARTTLS, when used). RFC 5804 §2.1 has the server send new ones after a login only when
	// a SASL security layer was negotiated, which PLAIN, LOGIN, OAUTHBEARER and XOAUTH2 never
	// do: what a client asks after the login, the backend answers itself.
	Capabilities []SieveCapability
}

// Close closes the backend connection.
func (s *SieveSession) Close() error { return s.Conn.Close() }

// DialSieve connects to the ManageSieve backend (RFC 5804), secures the connection as
// configured and logs in as user, all within cfg.Timeout and ctx: with AUTHENTICATE "PLAIN"
// and secret (login "plain"), AUTHENTICATE "LOGIN" and secret (login "login"), as
// cfg.MasterUser with the secret in cfg.MasterSecretFile (login "master": PLAIN with user as
// authorization identity; "master_separator": PLAIN as user+separator+master), or with secret
// as the client's access token in AUTHENTICATE "OAUTHBEARER" or "XOAUTH2" (login "token").
// With cfg.ForwardClientAddress, the client's address goes first in an XCLIENT command when
// the backend offers it (Dovecot's managesieve-login, from login_trusted_networks). The
// username and secret are checked before anything is sent. Errors wrap ErrRejected (the
// backend, or this package, refused this login) or ErrUnavailable (anything else, NO (TRYLATER)
// included); neither ever contains a secret.
func DialSieve(ctx context.Context, cfg Config, user string, secret Secret, client Client) (*SieveSession, error) {
	cfg, creds, err := cfg.prepareLogin("sieve", user, secret)
	if err != nil {
		return nil, err
	}
	c := &sieveClient{loginState: newLoginState("sieve", cfg, user, creds, client)}
	if err := c.run(ctx, c.login); err != nil {
		return nil, err
	}
	return &SieveSession{Conn: c.conn, Reader: c.br, Capabilities: c.caps}, nil
}

// ProbeSieve connects and secures the connection like DialSieve, but only to learn the
// capabilities the backend announces (after STARTTLS when configured), then LOGOUTs. Errors
// wrap ErrUnavailable.
func ProbeSieve(ctx context.Context, cfg Config) ([]SieveCapability, error) {
	if err := cfg.Validate(); err != nil {
		return nil, misconfigured("sieve", err)
	}
	c := &sieveClient{loginState: loginState{protocol: "sieve", cfg: cfg.withDefaults()}}
	err := c.run(ctx, func() error {
		// RFC 5804 §2.3: the server answers LOGOUT before it closes; its answer is not needed.
		if c.write("LOGOUT\r\n") == nil {
			_, _ = c.readResponse()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.conn.Close()
	return c.caps, nil
}

// sieveClient is the state of one DialSieve or ProbeSieve call.
type sieveClient struct {
	loginState // user "" when probing

	conn net.Conn // raw, or TLS over it
	br   *bufio.Reader
	caps []SieveCapability // the last capability response
	// extra holds strings to redact from backend text besides the secret (the SASL messages).
	extra []string
	// challenge is the decoded error challenge of login "token", for messages.
	challenge string
}

// run dials, secures the connection, reads the greeting and then runs steps, within
// cfg.Timeout and ctx (dial). On error the connection is closed.
func (c *sieveClient) run(ctx context.Context, steps func() error) error {
	return dial(ctx, c.cfg, "sieve", func(ctx context.Context, raw net.Conn, tlsCfg *tls.Config) (net.Conn, error) {
		c.ctx, c.conn = ctx, raw
		if err := c.open(tlsCfg); err != nil {
			return nil, err
		}
		if err := steps(); err != nil {
			return nil, err
		}
		return c.conn, nil
	})
}

// open runs the TLS handshake of tls "implicit", reads the greeting, and runs STARTTLS for tls
// "starttls".
func (c *sieveClient) open(tlsCfg *tls.Config) error {
	if c.cfg.TLS == "implicit" {
		if err := c.handshake(tlsCfg); err != nil {
			return err
		}
	}
	c.br = bufio.NewReader(c.conn)
	if err := c.capabilities("greeting"); err != nil {
		return err
	}
	if c.cfg.TLS == "starttls" {
		return c.startTLS(tlsCfg)
	}
	return nil
}

func (c *sieveClient) handshake(tlsCfg *tls.Config) error {
	tc := tls.Client(c.conn, tlsCfg)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return c.unavailable("tls handshake", err)
	}
	c.conn = tc
	return nil
}

// capabilities reads a capability response (RFC 5804 §1.7: capability lines, then OK) into
// c.caps. stage names it in errors.
func (c *sieveClient) capabilities(stage string) error {
	var caps []SieveCapability
	for {
		l, err := readSieveLine(c.br)
		if err != nil {
			return c.unavailable(stage, err)
		}
		if resp, ok := l.response(); ok {
			if resp.kind != "OK" {
				return c.unavailable(stage, errors.New(c.sanitize(resp.String())))
			}
			if !hasSieveCapability(caps, "IMPLEMENTATION") && !hasSieveCapability(caps, "SIEVE") {
				return c.unavailable(stage, errors.New("not a ManageSieve capability response (no IMPLEMENTATION, no SIEVE)"))
			}
			c.caps = caps
			return nil
		}
		capa, err := l.capability()
		if err != nil {
			return c.unavailable(stage, err)
		}
		if len(caps) == maxSieveCapabilities {
			return c.unavailable(stage, fmt.Errorf("more than %d capabilities", maxSieveCapabilities))
		}
		caps = append(caps, capa)
	}
}

// startTLS runs STARTTLS (RFC 5804 §2.2): OK, the handshake, and the capabilities the server
// sends again over TLS.
func (c *sieveClient) startTLS(tlsCfg *tls.Config) error {
	if !hasSieveCapability(c.caps, "STARTTLS") {
		return c.unavailable("starttls", errors.New("backend does not offer STARTTLS (set tls: none or implicit?)"))
	}
	if err := c.write("STARTTLS\r\n"); err != nil {
		return c.unavailable("starttls", err)
	}
	resp, err := c.readResponse()
	if err != nil {
		return c.unavailable("starttls", err)
	}
	if resp.kind != "OK" {
		return c.unavailable("starttls", fmt.Errorf("backend answered %s", c.sanitize(resp.String())))
	}
	// Anything buffered now was sent in clear text before the handshake and could have been
	// injected (CVE-2011-0411 class): drop it with the old reader, and the old capabilities.
	c.caps = nil
	if err := c.handshake(tlsCfg); err != nil {
		return err
	}
	c.br = bufio.NewReader(c.conn)
	return c.capabilities("capabilities after starttls")
}

// forward sends the client's address in XCLIENT (Dovecot's managesieve-login honours it from
// login_trusted_networks, and offers XCLIENT only there). A backend refusing it still gets the
// login: the forwarding is informational.
func (c *sieveClient) forward() error {
	if !c.cfg.ForwardClientAddress || !c.client.Addr.IsValid() || !hasSieveCapability(c.caps, "XCLIENT") {
		return nil
	}
	cmd := fmt.Sprintf("XCLIENT ADDR=%s PORT=%d\r\n", c.client.Addr.Addr().Unmap(), c.client.Addr.Port())
	if err := c.write(cmd); err != nil {
		return c.unavailable("xclient", err)
	}
	resp, err := c.readResponse()
	switch {
	case err != nil:
		return c.unavailable("xclient", err)
	case resp.kind == "BYE":
		return c.unavailable("xclient", errors.New(c.sanitize(resp.String())))
	}
	return nil
}

// login forwards the client's address if configured, then logs in as cfg.Login says.
func (c *sieveClient) login() error {
	if err := c.forward(); err != nil {
		return err
	}
	var mech string
	var steps []string // the client's messages: the initial response, then one per challenge
	switch c.cfg.Login {
	case LoginLogin:
		// The LOGIN mechanism (draft-murchison-sasl-login): the server asks for the user name,
		// then the password, each with a challenge; there is no initial response.
		mech = "LOGIN"
		steps = []string{"", c.authcid, c.secret}
	case LoginToken:
		mech = c.cfg.tokenMechanism()
		steps = []string{string(c.cfg.tokenResponse(c.authzid, Secret(c.secret)))}
	default:
		mech = "PLAIN"
		steps = []string{c.authzid + "\x00" + c.authcid + "\x00" + c.secret}
	}
	if !c.offersSASL(mech) {
		hint := ` (set login: "login"?)`
		switch c.cfg.Login {
		case LoginMaster, LoginMasterSeparator:
			hint = fmt.Sprintf(` (login %q needs it)`, c.cfg.Login)
		case LoginLogin:
			hint = ` (set login: "plain"?)`
		case LoginToken:
			hint = fmt.Sprintf(` (login "token", token_mechanism %q)`, strings.ToLower(mech))
		}
		return c.unavailable("login", fmt.Errorf("backend does not offer SASL %s%s", mech, hint))
	}
	encoded := make([]string, len(steps))
	for i, s := range steps {
		encoded[i] = base64.StdEncoding.EncodeToString([]byte(s))
		if s != "" {
			c.extra = append(c.extra, encoded[i])
		}
	}
	cmd := `AUTHENTICATE "` + mech + `"`
	if steps[0] != "" {
		cmd += " " + sieveString(encoded[0])
	}
	if err := c.write(cmd + "\r\n"); err != nil {
		return c.unavailable("login", err)
	}
	next, challenges := 1, 0
	var resp sieveResponse
	for {
		l, err := readSieveLine(c.br)
		if err != nil {
			return c.unavailable("login", err)
		}
		var ok bool
		if resp, ok = l.response(); ok {
			break
		}
		chal, err := l.challenge()
		if err != nil {
			return c.unavailable("login", err)
		}
		challenges++
		var answer string
		switch {
		case challenges > maxSieveChallenges:
			return c.unavailable("login", fmt.Errorf("more than %d challenges", maxSieveChallenges))
		case c.cfg.Login == LoginToken && challenges == 1:
			// RFC 7628 §3.2.2: a challenge after the message is the error challenge; it is
			// answered as the mechanism requires (§3.2.3), and the NO follows.
			if b, err := base64.StdEncoding.DecodeString(chal); err == nil {
				c.challenge = string(b)
			}
			answer = base64.StdEncoding.EncodeToString(c.cfg.tokenErrorAnswer())
		case next < len(encoded):
			answer = encoded[next]
			next++
		default:
			// A challenge the mechanism has no answer for: cancel (RFC 5804 §2.1); the
			// server answers NO.
			answer = "*"
		}
		if err := c.write(sieveString(answer) + "\r\n"); err != nil {
			return c.unavailable("login", err)
		}
	}
	if resp.kind == "OK" {
		if c.challenge != "" {
			return c.unavailable("login", errors.New("backend accepted the login after its error challenge"))
		}
		return nil
	}
	text := resp.String()
	if c.challenge != "" {
		text += " after the error challenge " + c.challenge
	}
	text = c.sanitize(text)
	// RFC 5804 §1.3: TRYLATER is a temporary failure; BYE closes the connection.
	if resp.kind == "BYE" || resp.code == "TRYLATER" {
		return c.unavailable("login", errors.New(text))
	}
	return &loginError{
		kind: ErrRejected,
		msg:  fmt.Sprintf("backends: sieve backend %s rejected login for %s: %s", c.cfg.Address, c.cfg.loginFor(c.user), text),
	}
}

// offersSASL reports whether the SASL capability lists mech (RFC 5804 §1.7: space-separated,
// case-insensitive).
func (c *sieveClient) offersSASL(mech string) bool {
	for _, capa := range c.caps {
		if strings.EqualFold(capa.Name, "SASL") {
			for _, m := range strings.Fields(capa.Value) {
				if strings.EqualFold(m, mech) {
					return true
				}
			}
		}
	}
	return false
}

// readResponse reads the OK, NO or BYE that completes a command; no other line may come first.
func (c *sieveClient) readResponse() (sieveResponse, error) {
	l, err := readSieveLine(c.br)
	if err != nil {
		return sieveResponse{}, err
	}
	resp, ok := l.response()
	if !ok {
		return sieveResponse{}, errors.New("expected OK, NO or BYE")
	}
	return resp, nil
}

func (c *sieveClient) write(s string) error {
	_, err := c.conn.Write([]byte(s))
	return err
}

// sanitize makes backend text safe to log, redacting the secret and the SASL messages.
func (c *sieveClient) sanitize(s string) string {
	return sanitize(s, append([]string{c.secret}, c.extra...)...)
}

// hasSieveCapability reports whether caps has a capability called name, case-insensitively.
func hasSieveCapability(caps []SieveCapability, name string) bool {
	for _, c := range caps {
		if strings.EqualFold(c.Name, name) {
			return true
		}
	}
	return false
}

// sieveString is s as a ManageSieve string (RFC 5804 §4): quoted when it is short and plain,
// else a non-synchronising literal, the only kind a client sends.
func sieveString(s string) string {
	if len(s) <= maxSieveQuoted && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s
}

// sieveLine is one logical line from a ManageSieve server, its literals read.
type sieveLine []sievewire.Item

// sieveResponse is a response-oknobye (RFC 5804 §4): "OK" / "NO" / "BYE", an optional
// response code and an optional human-readable string.
type sieveResponse struct {
	kind string // OK, NO or BYE
	code string // the response code's name, upper case ("TRYLATER", "SASL"); "" if none
	text string
}

// String is the response as it could be logged: kind, (code) and text.
func (r sieveResponse) String() string {
	s := r.kind
	if r.code != "" {
		s += " (" + r.code + ")"
	}
	if r.text != "" {
		s += " " + r.text
	}
	return s
}

// response returns l as a response when it starts with OK, NO or BYE.
func (l sieveLine) response() (sieveResponse, bool) {
	if len(l) == 0 || l[0].Kind != 'a' {
		return sieveResponse{}, false
	}
	kind := strings.ToUpper(l[0].S)
	if kind != "OK" && kind != "NO" && kind != "BYE" {
		return sieveResponse{}, false
	}
	r := sieveResponse{kind: kind}
	rest := l[1:]
	if len(rest) > 0 && rest[0].Kind == '(' {
		// resp-code = atom [SP string] / extension data, which may nest parentheses: only
		// the atom matters here; the rest is skipped up to the matching parenthesis.
		if len(rest) > 1 && rest[1].Kind == 'a' {
			r.code = strings.ToUpper(rest[1].S)
		}
		for depth := 0; len(rest) > 0; {
			switch rest[0].Kind {
			case '(':
				depth++
			case ')':
				depth--
			}
			rest = rest[1:]
			if depth == 0 {
				break
			}
		}
	}
	if len(rest) > 0 && rest[0].Kind == 's' {
		r.text = rest[0].S
	}
	return r, true
}

// capability returns l as a capability line: a string name and an optional string value.
func (l sieveLine) capability() (SieveCapability, error) {
	switch {
	case len(l) == 1 && l[0].Kind == 's':
		return SieveCapability{Name: l[0].S}, nil
	case len(l) == 2 && l[0].Kind == 's' && l[1].Kind == 's':
		return SieveCapability{Name: l[0].S, Value: l[1].S, HasValue: true}, nil
	}
	return SieveCapability{}, errors.New("not a capability line")
}

// challenge returns l as a SASL challenge: one string (RFC 5804 §2.1).
func (l sieveLine) challenge() (string, error) {
	if len(l) != 1 || l[0].Kind != 's' {
		return "", errors.New("expected a challenge string or OK, NO or BYE")
	}
	return l[0].S, nil
}

// readSieveLine reads one logical line from a ManageSieve server: its items, with the
// literals it announces ("{n}" CRLF n octets, RFC 5804 §4 literal-s2c) read and bounded.
func readSieveLine(br *bufio.Reader) (sieveLine, error) {
	var items sieveLine
	for literals := 0; ; literals++ {
		raw, err := readLine(br, maxSieveLine)
		if errors.Is(err, errLineTooLong) {
			return nil, fmt.Errorf("line longer than %d bytes", maxSieveLine)
		}
		if err != nil {
			return nil, err
		}
		n, rest, isLit, err := sievewire.Tokenize(raw, (*[]sievewire.Item)(&items))
		if err != nil {
			return nil, fmt.Errorf("%w: %.80q", err, rest)
		}
		if !isLit {
			return items, nil
		}
		switch {
		case literals == maxSieveLiterals:
			return nil, fmt.Errorf("more than %d literals in one line", maxSieveLiterals)
		case n > maxSieveLiteral:
			return nil, fmt.Errorf("literal of %d bytes, more than %d", n, maxSieveLiteral)
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(br, lit); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		items = append(items, sievewire.Item{Kind: 's', S: string(lit)})
	}
}
