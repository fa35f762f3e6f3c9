package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/saslgate/saslgate/proxy/sasl"
	"github.com/saslgate/saslgate/tls/binding"
)

// Protocols and TLS modes of a Target. The protocols are named as saslgate's protocol
// registry names its front ends.
const (
	IMAP  = "imap"
	POP3  = "pop3"
	SMTP  = "smtp"
	Sieve = "sieve" // ManageSieve (RFC 5804)

	TLSImplicit = "implicit"
	TLSStartTLS = "starttls"
	TLSNone     = "none"
)

// Channel-binding types Options.ChannelBinding accepts.
const (
	TLSExporter       = binding.TLSExporter       // RFC 9266, TLS 1.3 only
	TLSServerEndPoint = binding.TLSServerEndPoint // RFC 5929 §4
)

// DefaultTimeout bounds a whole Run when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Bounds of what a server may send: one line (pre-auth lines are short), one ManageSieve
// literal, the lines of a POP3 CAPA or ManageSieve capability response, the literals of one
// ManageSieve line, and the challenges of one POP3 or ManageSieve authentication.
const (
	maxLine          = 64 << 10
	maxLiteral       = 64 << 10
	maxCapabilities  = 256
	maxSieveLiterals = 8
	maxChallenges    = 4
)

// ErrAuthFailed is wrapped by the error Run returns when the server refuses the
// authentication (IMAP NO or BAD, an SMTP 4xx or 5xx reply to AUTH, a POP3 -ERR, a
// ManageSieve NO).
var ErrAuthFailed = errors.New("probe: authentication failed")

// Target is one server to probe.
type Target struct {
	Protocol string // IMAP, POP3, SMTP or Sieve
	TLS      string // TLSImplicit, TLSStartTLS or TLSNone
	Address  string // host:port
}

// schemes maps URL schemes to protocol, TLS mode and default port (0: none, the URL must
// give one).
var schemes = map[string]struct {
	protocol, tls string
	port          int
}{
	"imaps":          {IMAP, TLSImplicit, 993},
	"imap+starttls":  {IMAP, TLSStartTLS, 143},
	"imap":           {IMAP, TLSNone, 143},
	"pop3s":          {POP3, TLSImplicit, 995}, // RFC 8314 §7.4
	"pop3+stls":      {POP3, TLSStartTLS, 110}, // RFC 2595 §4
	"pop3+starttls":  {POP3, TLSStartTLS, 110},
	"pop3":           {POP3, TLSNone, 110},
	"smtps":          {SMTP, TLSImplicit, 465},
	"submissions":    {SMTP, TLSImplicit, 465},
	"smtp+starttls":  {SMTP, TLSStartTLS, 587},
	"submission":     {SMTP, TLSStartTLS, 587},
	"smtp":           {SMTP, TLSNone, 25},
	"smtp+plaintext": {SMTP, TLSNone, 25},
	// RFC 5804 §3: the sieve URL's server speaks STARTTLS on 4190. Implicit TLS has no
	// registered port, but saslgate serves it on a listener with tls: implicit.
	"sieve":           {Sieve, TLSStartTLS, 4190},
	"sieve+implicit":  {Sieve, TLSImplicit, 0},
	"sieve+plaintext": {Sieve, TLSNone, 4190},
}

// ParseURL reads a target such as imaps://mail.example.com:993. The schemes are imaps,
// imap+starttls and imap (no TLS); pop3s, pop3+stls (or pop3+starttls) and pop3 (no TLS);
// smtps (or submissions), smtp+starttls (or submission) and smtp (no TLS); sieve
// (ManageSieve with STARTTLS), sieve+implicit and sieve+plaintext (no TLS). A missing port is
// the scheme's usual one (993, 143, 995, 110, 465, 587, 25, 4190); sieve+implicit has none
// and needs the port.
func ParseURL(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("probe: %v", err)
	}
	sc, ok := schemes[strings.ToLower(u.Scheme)]
	if !ok || u.Host == "" {
		return Target{}, fmt.Errorf("probe: %q: want imaps://, imap+starttls://, imap://, pop3s://, pop3+stls://, pop3://, smtps://, smtp+starttls://, smtp://, sieve://, sieve+implicit:// or sieve+plaintext:// with a host", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return Target{}, fmt.Errorf("probe: %q: only scheme, host and port are used", s)
	}
	port := u.Port()
	if port == "" && sc.port == 0 {
		return Target{}, fmt.Errorf("probe: %q: %s:// has no usual port; give one", s, strings.ToLower(u.Scheme))
	}
	if port == "" {
		port = strconv.Itoa(sc.port)
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Target{}, fmt.Errorf("probe: %q: bad port", s)
	}
	return Target{Protocol: sc.protocol, TLS: sc.tls, Address: net.JoinHostPort(u.Hostname(), port)}, nil
}

// Options says what Run does.
type Options struct {
	Target
	// TLSConfig is cloned for the handshake; its ServerName defaults to the target's host.
	// Client certificates for RFC 8705 bound tokens go in Certificates.
	TLSConfig *tls.Config
	// Mechanism is sasl.OAuthBearer or sasl.XOAuth2; empty probes without authenticating.
	Mechanism string
	// User is the OAUTHBEARER authzid (a=) or the XOAUTH2 user=; optional for OAUTHBEARER.
	User  string
	Token string // never written to the transcript
	// Host and Port are sent as OAUTHBEARER host= and port= (RFC 7628 §3.1); by default
	// the target's host and port.
	Host string
	Port int
	// ChannelBinding, when set, sends the GS2 flag p=<type> and cbdata computed from this
	// connection: TLSExporter or TLSServerEndPoint. OAUTHBEARER over TLS only.
	ChannelBinding string
	// NoInitialResponse waits for the server's empty challenge instead of sending the
	// credentials with the command (IMAP SASL-IR, RFC 4959; SMTP, RFC 4954 §4; POP3, RFC
	// 5034 §4, which also forbids it when the AUTH line would exceed 255 octets; ManageSieve,
	// RFC 5804 §2.1).
	NoInitialResponse bool
	// EHLOName is the SMTP EHLO argument (default "localhost").
	EHLOName string
	// Transcript receives every line sent ("C: ") and received ("S: ") and notes ("* ").
	Transcript io.Writer
	// Timeout bounds the whole run (default DefaultTimeout).
	Timeout time.Duration
}

// Result is what a Run found out, as far as it got.
type Result struct {
	// Greeting is the server's greeting: for ManageSieve, the OK that ends the capability
	// response it greets with (RFC 5804 §1.7).
	Greeting string
	// Capabilities are what the server offers, after TLS: IMAP capabilities, SMTP EHLO
	// keywords with their parameters, POP3 CAPA lines (RFC 2449 §5; nil when the server has
	// no CAPA), or ManageSieve capabilities as name and value ("SASL OAUTHBEARER XOAUTH2",
	// "STARTTLS").
	Capabilities []string
	TLS          *tls.ConnectionState
	// Challenge is the decoded error challenge the server sent instead of accepting the
	// token (RFC 7628 §3.2.2 JSON), nil if none.
	Challenge     []byte
	Authenticated bool
	// Final is the server's last reply to the authentication.
	Final string
}

// Run connects to the target and goes as far as Options asks. The error wraps ErrAuthFailed
// when the server refused the token; any other error means the dialog broke down.
func Run(ctx context.Context, o Options) (*Result, error) {
	run := dialogs[o.Protocol]
	if run == nil {
		return nil, fmt.Errorf("probe: protocol %q: want %q, %q, %q or %q", o.Protocol, IMAP, POP3, SMTP, Sieve)
	}
	switch o.TLS {
	case TLSImplicit, TLSStartTLS, TLSNone:
	default:
		return nil, fmt.Errorf("probe: tls %q: want %q, %q or %q", o.TLS, TLSImplicit, TLSStartTLS, TLSNone)
	}
	switch o.Mechanism {
	case "", sasl.OAuthBearer, sasl.XOAuth2:
	default:
		return nil, fmt.Errorf("probe: mechanism %q: want %s or %s", o.Mechanism, sasl.OAuthBearer, sasl.XOAuth2)
	}
	if o.Mechanism != "" && o.Token == "" {
		return nil, errors.New("probe: a token is required to authenticate")
	}
	if o.ChannelBinding != "" {
		if o.Mechanism != sasl.OAuthBearer || o.TLS == TLSNone {
			return nil, errors.New("probe: channel binding needs OAUTHBEARER over TLS")
		}
		if o.ChannelBinding != TLSExporter && o.ChannelBinding != TLSServerEndPoint {
			return nil, fmt.Errorf("probe: channel binding %q: want %s or %s", o.ChannelBinding, TLSExporter, TLSServerEndPoint)
		}
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	host, portStr, err := net.SplitHostPort(o.Address)
	if err != nil {
		return nil, fmt.Errorf("probe: address %q: %v", o.Address, err)
	}
	if o.Host == "" {
		o.Host = host
	}
	if o.Port == 0 {
		o.Port, _ = strconv.Atoi(portStr)
	}
	tc := &tls.Config{}
	if o.TLSConfig != nil {
		tc = o.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}

	s := &session{opts: o, tlsConf: tc, res: &Result{}, ctx: ctx}
	s.secrets = []string{o.Token}
	var d net.Dialer
	s.note("connecting to %s (%s, tls %s)", o.Address, o.Protocol, o.TLS)
	raw, err := d.DialContext(ctx, "tcp", o.Address)
	if err != nil {
		return s.res, fmt.Errorf("probe: %w", err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s.conn = raw
	if o.TLS == TLSImplicit {
		if err := s.handshake(); err != nil {
			return s.res, err
		}
	} else {
		s.br = bufio.NewReaderSize(raw, 4096)
	}
	err = run(s)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrAuthFailed) {
		err = fmt.Errorf("%w (timeout %v)", err, o.Timeout)
	}
	return s.res, err
}

// dialogs are the protocols' conversations, by Target.Protocol.
var dialogs = map[string]func(*session) error{
	IMAP: (*session).imap, POP3: (*session).pop3, SMTP: (*session).smtp, Sieve: (*session).sieve,
}

// session is the state of one Run.
type session struct {
	opts    Options
	tlsConf *tls.Config
	res     *Result
	ctx     context.Context
	conn    net.Conn
	br      *bufio.Reader
	secrets []string // strings never written to the transcript
}

func (s *session) note(format string, args ...any) {
	if s.opts.Transcript != nil {
		fmt.Fprintf(s.opts.Transcript, "* "+format+"\n", args...)
	}
}

// send writes line and CRLF; shown is what the transcript gets instead, when not "".
func (s *session) send(line, shown string) error {
	if shown == "" {
		shown = s.redact(line)
	}
	if s.opts.Transcript != nil {
		fmt.Fprintf(s.opts.Transcript, "C: %s\n", shown)
	}
	if _, err := io.WriteString(s.conn, line+"\r\n"); err != nil {
		return fmt.Errorf("probe: write: %w", err)
	}
	return nil
}

// readLine reads one server line without its CRLF.
func (s *session) readLine() (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := s.br.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the connection")
			}
			return "", fmt.Errorf("probe: read: %w", err)
		}
		b = append(b, chunk...)
		if len(b) > maxLine {
			return "", fmt.Errorf("probe: server line longer than %d bytes", maxLine)
		}
		if !isPrefix {
			break
		}
	}
	line := string(b)
	if s.opts.Transcript != nil {
		fmt.Fprintf(s.opts.Transcript, "S: %s\n", s.redact(line))
	}
	return line, nil
}

// redact replaces the token, and the base64 of any message that carries it, in text for the
// transcript.
func (s *session) redact(text string) string {
	for _, x := range s.secrets {
		if x != "" {
			text = strings.ReplaceAll(text, x, "[redacted]")
		}
	}
	return text
}

func (s *session) handshake() error {
	tc := tls.Client(s.conn, s.tlsConf)
	if err := tc.HandshakeContext(s.ctx); err != nil {
		return fmt.Errorf("probe: TLS handshake with %s: %w", s.tlsConf.ServerName, err)
	}
	st := tc.ConnectionState()
	s.res.TLS = &st
	s.conn = tc
	s.br = bufio.NewReaderSize(tc, 4096)
	leaf := st.PeerCertificates[0]
	verified := fmt.Sprintf("verified for %q", s.tlsConf.ServerName)
	if s.tlsConf.InsecureSkipVerify {
		verified = "NOT verified (--insecure-skip-verify)"
	}
	s.note("TLS %s %s, server certificate %q (issuer %q, expires %s) %s",
		tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), leaf.Subject.String(),
		leaf.Issuer.String(), leaf.NotAfter.UTC().Format(time.RFC3339), verified)
	if len(s.tlsConf.Certificates) > 0 || s.tlsConf.GetClientCertificate != nil {
		s.note("client certificate offered")
	}
	return nil
}

// message builds the SASL client message and its transcript form.
func (s *session) message() (raw []byte, shown string, err error) {
	o := s.opts
	if o.Mechanism == sasl.XOAuth2 {
		raw = sasl.EncodeXOAuth2(o.User, o.Token)
	} else {
		c := sasl.Credentials{AuthzID: o.User, Host: o.Host, Port: o.Port, Token: o.Token, CBFlag: 'n'}
		if o.ChannelBinding != "" {
			data, err := bindingData(s.res.TLS, o.ChannelBinding)
			if err != nil {
				return nil, "", err
			}
			c.CBFlag, c.CBType, c.CBData = 'p', o.ChannelBinding, data
		}
		raw = sasl.EncodeOAuthBearer(c)
	}
	s.secrets = append(s.secrets, base64.StdEncoding.EncodeToString(raw))
	shown = strings.ReplaceAll(strings.ReplaceAll(string(raw), o.Token, fmt.Sprintf("[token redacted, %d bytes]", len(o.Token))), "\x01", "^A")
	return raw, "<" + shown + ">", nil
}

// errorReply is the client's answer to an error challenge: RFC 7628 §3.2.3 requires a single
// %x01 for OAUTHBEARER; XOAUTH2 clients send an empty response.
func (s *session) errorReply() string {
	if s.opts.Mechanism == sasl.XOAuth2 {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte{0x01})
}

// noteChallenge decodes a server challenge for the transcript and the Result.
func (s *session) noteChallenge(b64 string) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		s.note("challenge is not base64: %v", err)
		return
	}
	s.res.Challenge = b
	s.note("error challenge: %s", b)
}

// bindingData computes the channel-binding data of typ for the connection.
func bindingData(st *tls.ConnectionState, typ string) ([]byte, error) {
	if st == nil {
		return nil, errors.New("probe: channel binding needs TLS")
	}
	data, err := binding.Data(*st, typ)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	return data, nil
}
