package sasl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"

	gosasl "github.com/emersion/go-sasl"
)

// Mechanism names, as advertised and as found in Credentials.Mechanism.
const (
	OAuthBearer = "OAUTHBEARER"
	XOAuth2     = "XOAUTH2"
)

// Credentials is what a client presented in one OAUTHBEARER or XOAUTH2 message.
type Credentials struct {
	Mechanism string // "OAUTHBEARER" or "XOAUTH2"
	Token     string // the bearer token (auth=Bearer <token>), never logged
	AuthzID   string // OAUTHBEARER gs2 a= (unescaped =2C → ',', =3D → '='), XOAUTH2 user=; "" if absent
	Host      string // host= kvpair, "" if absent
	Port      int    // port= kvpair, 0 if absent (decimal, no leading zeros, 1..65535)
	CBFlag    byte   // 'n', 'y' or 'p' (OAUTHBEARER); 'n' for XOAUTH2
	CBType    string // p=<cb-name>
	CBData    []byte // decoded cbdata= kvpair (draft-ietf-kitten-sasl-oauth-03), nil if absent
}

// String describes c for logs and test output, without the token.
func (c Credentials) String() string {
	return fmt.Sprintf("%s{authzid=%q host=%q port=%d cbflag=%q cbtype=%q cbdata=%d bytes token=[redacted]}",
		c.Mechanism, c.AuthzID, c.Host, c.Port, c.CBFlag, c.CBType, len(c.CBData))
}

// LogValue implements slog.LogValuer, without the token.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// ErrMalformed is wrapped by every parse error (errors.Is); the error's text
// says what is wrong without repeating the client's bytes.
var ErrMalformed = errors.New("sasl: malformed client response")

// malformed is a parse error. Its text is fixed or names a known key, never
// the client's values, so no token can leak into logs through it.
type malformed string

func (m malformed) Error() string { return ErrMalformed.Error() + ": " + string(m) }
func (m malformed) Unwrap() error { return ErrMalformed }

// Authenticator checks credentials. Returning a *Failure (errors.As) makes the
// mechanism send the error challenge and fail after the client's reply; any
// other error aborts the exchange at once (returned from Next unchanged), for
// temporary trouble with the IdP or the backend.
type Authenticator func(Credentials) error

const kvsep = 0x01

var (
	errBareKVSep = errors.New("sasl: client sent a bare kvsep instead of credentials")
	errFinished  = fmt.Errorf("%w: exchange already finished", gosasl.ErrUnexpectedClientResponse)
	// cbdataEncoding rejects non-canonical padding bits, so that a binding
	// value has exactly one spelling.
	cbdataEncoding = base64.StdEncoding.Strict()
)

// ParseOAuthBearer parses one OAUTHBEARER client response (RFC 7628 §3.1),
// already base64-decoded:
//
//	client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
//
// The bare kvsep form carries no credentials and is reported as malformed;
// the server answers it before parsing. The cbdata pair and the gs2 flag p=
// must come together (draft-ietf-kitten-sasl-oauth-03); whether binding is
// acceptable at all is the Authenticator's decision.
func ParseOAuthBearer(msg []byte) (Credentials, error) {
	switch {
	case len(msg) == 0:
		return Credentials{}, malformed("message is empty")
	case len(msg) == 1 && msg[0] == kvsep:
		return Credentials{}, malformed("bare kvsep carries no credentials")
	}
	c := Credentials{Mechanism: OAuthBearer}
	p, err := parseGS2Header(msg, &c)
	if err != nil {
		return Credentials{}, err
	}
	if len(p) == 0 || p[0] != kvsep {
		return Credentials{}, malformed("gs2 header is not followed by kvsep")
	}
	p = p[1:]

	const (
		seenAuth = 1 << iota
		seenHost
		seenPort
		seenCBData
	)
	var seen uint8
	for {
		key, val, rest, err := cutKVPair(p)
		if err != nil {
			return Credentials{}, err
		}
		if key == nil {
			break
		}
		p = rest
		if !isValue(val) {
			return Credentials{}, malformed("kvpair value has a byte outside VCHAR / SP / HTAB / CR / LF")
		}
		var bit uint8
		switch string(key) {
		case "auth":
			bit = seenAuth
			c.Token, err = parseBearer(val)
		case "host":
			bit = seenHost
			c.Host = string(val)
		case "port":
			bit = seenPort
			c.Port, err = parsePort(val)
		case "cbdata":
			bit = seenCBData
			c.CBData, err = decodeCBData(val)
		default:
			continue // RFC 7628 §3.1: "Unknown key/value pairs MUST be ignored."
		}
		if err != nil {
			return Credentials{}, err
		}
		// A repeated key would let two parsers of one message disagree. key
		// is one of the names above, never other client bytes.
		if seen&bit != 0 {
			return Credentials{}, malformed("kvpair " + string(key) + " appears twice")
		}
		seen |= bit
	}
	switch {
	case seen&seenAuth == 0:
		return Credentials{}, malformed("auth kvpair is missing")
	case c.CBFlag == 'p' && c.CBData == nil:
		return Credentials{}, malformed("gs2 flag p= without a cbdata kvpair")
	case c.CBFlag != 'p' && c.CBData != nil:
		return Credentials{}, malformed("cbdata kvpair without gs2 flag p=")
	}
	return c, nil
}

// parseGS2Header parses the GS2 header of RFC 5801 §4 and returns the rest:
//
//	gs2-header  = [gs2-nonstd-flag ","] gs2-cb-flag "," [gs2-authzid] ","
//	gs2-cb-flag = ("p=" cb-name) / "n" / "y"
//	gs2-authzid = "a=" saslname
//
// Literals are matched in the case RFC 5801 writes them, as every GS2
// implementation does.
func parseGS2Header(p []byte, c *Credentials) ([]byte, error) {
	// "F" only says the mechanism is not a standard GSS-API one (RFC 5801 §4):
	// nothing to act on here.
	p, _ = bytes.CutPrefix(p, []byte("F,"))
	flag, p, ok := bytes.Cut(p, []byte{','})
	if !ok {
		return nil, malformed("gs2 header is not terminated by ','")
	}
	switch {
	case len(flag) == 1 && (flag[0] == 'n' || flag[0] == 'y'):
		c.CBFlag = flag[0]
	case len(flag) > 2 && flag[0] == 'p' && flag[1] == '=' && isCBName(flag[2:]):
		c.CBFlag = 'p'
		c.CBType = string(flag[2:])
	default:
		return nil, malformed("gs2 channel-binding flag is not n, y or p=<cb-name>")
	}
	authz, p, ok := bytes.Cut(p, []byte{','})
	if !ok {
		return nil, malformed("gs2 header is not terminated by ','")
	}
	if len(authz) > 0 {
		name, ok := bytes.CutPrefix(authz, []byte("a="))
		if !ok {
			return nil, malformed("gs2 authzid does not start with a=")
		}
		var err error
		if c.AuthzID, err = unescapeSASLName(name); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// unescapeSASLName decodes an RFC 5801 §4 saslname:
//
//	saslname = 1*(UTF8-char-safe / "=2C" / "=3D")
//
// UTF8-char-safe is any UTF-8 character but NUL, ',' and '='; the RFC says the
// server MUST fail on a '=' not followed by "2C" or "3D".
func unescapeSASLName(b []byte) (string, error) {
	switch {
	case len(b) == 0:
		return "", malformed("gs2 authzid is empty")
	case !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0:
		return "", malformed("gs2 authzid is not UTF-8 without NUL")
	case bytes.IndexByte(b, '=') < 0:
		return string(b), nil
	}
	var sb strings.Builder
	sb.Grow(len(b))
	for {
		i := bytes.IndexByte(b, '=')
		if i < 0 {
			sb.Write(b)
			return sb.String(), nil
		}
		sb.Write(b[:i])
		switch {
		case bytes.HasPrefix(b[i:], []byte("=2C")):
			sb.WriteByte(',')
		case bytes.HasPrefix(b[i:], []byte("=3D")):
			sb.WriteByte('=')
		default:
			return "", malformed("gs2 authzid has '=' not followed by 2C or 3D")
		}
		b = b[i+3:]
	}
}

// cutKVPair cuts the first kvpair off p (RFC 7628 §3.1):
//
//	kvpair = key "=" value kvsep
//	key    = 1*(ALPHA)
//
// At the closing kvsep, which must end the message, it returns a nil key.
// XOAUTH2 messages share this syntax.
func cutKVPair(p []byte) (key, value, rest []byte, err error) {
	pair, rest, ok := bytes.Cut(p, []byte{kvsep})
	switch {
	case !ok:
		return nil, nil, nil, malformed("message does not end with kvsep kvsep")
	case len(pair) == 0 && len(rest) > 0:
		return nil, nil, nil, malformed("data after the closing kvsep")
	case len(pair) == 0:
		return nil, nil, nil, nil
	}
	key, value, ok = bytes.Cut(pair, []byte{'='})
	if !ok || !isKey(key) {
		return nil, nil, nil, malformed("kvpair is not key=value with an ALPHA key")
	}
	return key, value, rest, nil
}

// parseBearer parses an auth value that holds an RFC 6750 §2.1 credential:
//
//	credentials = "Bearer" 1*SP b64token
//	b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//
// The scheme is case-insensitive (RFC 7235 §2.1).
func parseBearer(v []byte) (string, error) {
	const scheme = "bearer"
	if len(v) < len(scheme) || !equalFoldASCII(v[:len(scheme)], scheme) {
		return "", malformed("auth is not a Bearer credential")
	}
	tok := bytes.TrimLeft(v[len(scheme):], " ")
	if len(tok) == len(v)-len(scheme) {
		return "", malformed("auth scheme Bearer is not followed by SP")
	}
	if !isB64Token(tok) {
		return "", malformed("bearer token is not an RFC 6750 b64token")
	}
	return string(tok), nil
}

// parsePort parses the port value, "a decimal positive integer string without
// leading zeros" (RFC 7628 §3.1).
func parsePort(v []byte) (int, error) {
	if len(v) == 0 || len(v) > 5 || v[0] == '0' {
		return 0, malformed("port is not a decimal 1..65535 without leading zeros")
	}
	n := 0
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, malformed("port is not a decimal 1..65535 without leading zeros")
		}
		n = n*10 + int(b-'0')
	}
	if n > 65535 {
		return 0, malformed("port is not a decimal 1..65535 without leading zeros")
	}
	return n, nil
}

// decodeCBData decodes the cbdata value, the base64 channel-binding data of
// draft-ietf-kitten-sasl-oauth-03.
func decodeCBData(v []byte) ([]byte, error) {
	// encoding/base64 skips CR and LF, which the value syntax allows.
	if len(v) == 0 || bytes.ContainsAny(v, "\r\n") {
		return nil, malformed("cbdata is not base64")
	}
	out := make([]byte, cbdataEncoding.DecodedLen(len(v)))
	n, err := cbdataEncoding.Decode(out, v)
	if err != nil {
		return nil, malformed("cbdata is not base64")
	}
	return out[:n], nil
}

// isValue reports whether v is a kvpair value (RFC 7628 §3.1):
//
//	value = *(VCHAR / SP / HTAB / CR / LF)
func isValue(v []byte) bool {
	for _, b := range v {
		if (b < 0x21 || b > 0x7e) && b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			return false
		}
	}
	return true
}

func isKey(k []byte) bool {
	for _, b := range k {
		if !isAlpha(b) {
			return false
		}
	}
	return len(k) > 0
}

// isCBName reports whether n is an RFC 5801 §4 cb-name:
//
//	cb-name = 1*(ALPHA / DIGIT / "." / "-")
func isCBName(n []byte) bool {
	for _, b := range n {
		if !isAlpha(b) && !isDigit(b) && b != '.' && b != '-' {
			return false
		}
	}
	return len(n) > 0
}

func isB64Token(t []byte) bool {
	i := 0
	for i < len(t) && (isAlpha(t[i]) || isDigit(t[i]) || strings.IndexByte("-._~+/", t[i]) >= 0) {
		i++
	}
	if i == 0 {
		return false
	}
	for _, b := range t[i:] {
		if b != '=' {
			return false
		}
	}
	return true
}

func isAlpha(b byte) bool { return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' }
func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// equalFoldASCII compares b with the lower-case ASCII string lower, ignoring
// ASCII case only (no Unicode folding: "ſ" is not "s" here).
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// EncodeOAuthBearer returns the raw (not base64) OAUTHBEARER client response
// that ParseOAuthBearer reads back as c, for tests, probe tools and the backend
// login "token" (backends). The GS2 flag comes from CBFlag ('n' when zero) and
// CBType, the authzid is escaped per RFC 5801 §4, and host, port and cbdata
// are sent when set. c is not validated and Mechanism is ignored.
func EncodeOAuthBearer(c Credentials) []byte {
	b := make([]byte, 0, 64+len(c.AuthzID)+len(c.Host)+len(c.Token)+2*len(c.CBData))
	switch c.CBFlag {
	case 'p':
		b = append(b, "p="...)
		b = append(b, c.CBType...)
	case 'y':
		b = append(b, 'y')
	default:
		b = append(b, 'n')
	}
	b = append(b, ',')
	if c.AuthzID != "" {
		b = append(b, "a="...)
		for i := 0; i < len(c.AuthzID); i++ {
			switch c.AuthzID[i] {
			case ',':
				b = append(b, "=2C"...)
			case '=':
				b = append(b, "=3D"...)
			default:
				b = append(b, c.AuthzID[i])
			}
		}
	}
	b = append(b, ',', kvsep)
	if c.Host != "" {
		b = append(b, "host="...)
		b = append(b, c.Host...)
		b = append(b, kvsep)
	}
	if c.Port != 0 {
		b = append(b, "port="...)
		b = strconv.AppendInt(b, int64(c.Port), 10)
		b = append(b, kvsep)
	}
	if c.CBData != nil {
		b = append(b, "cbdata="...)
		b = base64.StdEncoding.AppendEncode(b, c.CBData)
		b = append(b, kvsep)
	}
	b = append(b, "auth=Bearer "...)
	b = append(b, c.Token...)
	return append(b, kvsep, kvsep)
}

// NewOAuthBearer returns the server side of one OAUTHBEARER exchange
// (RFC 7628 §3) that checks the client's credentials with auth, which must
// not be nil. The server is for one exchange and one goroutine.
func NewOAuthBearer(auth Authenticator) gosasl.Server {
	return newServer(auth, ParseOAuthBearer, (*Failure).oauthBearerJSON, true)
}

// state is where an exchange stands.
type state uint8

const (
	stateStart   state = iota // nothing received yet
	stateWaiting              // empty challenge sent, credentials expected
	stateFailed               // error challenge sent, one reply expected
	stateDone                 // finished: any further call is an error
)

// server is the exchange both mechanisms share; they differ in how a message
// is parsed and how a failure is encoded.
type server struct {
	auth      Authenticator
	parse     func([]byte) (Credentials, error)
	challenge func(*Failure) []byte
	bareKVSep bool // OAUTHBEARER: a lone kvsep is answered with the error challenge
	state     state
	failure   *Failure
}

var _ gosasl.Server = (*server)(nil)

func newServer(auth Authenticator, parse func([]byte) (Credentials, error), challenge func(*Failure) []byte, bareKVSep bool) *server {
	if auth == nil {
		panic("sasl: nil Authenticator")
	}
	return &server{auth: auth, parse: parse, challenge: challenge, bareKVSep: bareKVSep}
}

// Next implements gosasl.Server.
func (s *server) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.state {
	case stateDone:
		return nil, true, errFinished
	case stateFailed:
		// RFC 7628 §3.2.3: the client answers the error challenge with a kvsep
		// (or aborts), and then the server fails the exchange. Real clients
		// also answer with an empty response or their whole initial response
		// again: whatever comes is the end, never a new attempt.
		s.state = stateDone
		return nil, true, s.failure
	case stateStart:
		if response == nil {
			// No initial response (RFC 4422 §5): ask for it with an empty challenge.
			s.state = stateWaiting
			return []byte{}, false, nil
		}
	}
	if s.bareKVSep && len(response) == 1 && response[0] == kvsep {
		// RFC 7628 §3.1 allows a bare kvsep as a client response. As the first
		// message it carries no credentials: fail it the §3.2.2 way.
		return s.fail(&Failure{Status: StatusInvalidRequest, Err: errBareKVSep})
	}
	s.state = stateDone
	creds, err := s.parse(response)
	if err != nil {
		return nil, true, err
	}
	err = s.auth(creds)
	var f *Failure
	switch {
	case err == nil:
		return nil, true, nil
	case errors.As(err, &f) && f != nil:
		return s.fail(f)
	default:
		return nil, true, err
	}
}

// fail sends the error challenge; the exchange fails on the client's reply.
func (s *server) fail(f *Failure) ([]byte, bool, error) {
	s.state = stateFailed
	s.failure = f
	return s.challenge(f), false, nil
}
