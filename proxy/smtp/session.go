package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// The replies saslgate gives of its own (RFC 4954 §6, RFC 5321 §4.2, RFC 3463 codes).
var (
	errAuthRequired       = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errEncryptionRequired = &gosmtp.SMTPError{Code: 538, EnhancedCode: gosmtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
	errAuthFailed         = &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthMalformed      = &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}
	errAuthTemporary      = &gosmtp.SMTPError{Code: 454, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errBackendLost        = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Mail system unavailable, closing connection"}
	errSenderNotOwned     = &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Sender address not owned by the authenticated user"}
	errParamUnsupported   = &gosmtp.SMTPError{Code: 555, EnhancedCode: gosmtp.EnhancedCode{5, 5, 4}, Message: "Parameter not supported by the mail system"}
)

var (
	errNoBackend    = errors.New("smtp: no backend session")
	errBackendWrite = errors.New("smtp: writing message data to the backend")
	errNoReply      = errors.New("smtp: no reply to the error challenge")
	errClientClosed = errors.New("smtp: client closed the connection during BDAT")
)

const (
	// quitTimeout bounds the wait for the backend's reply to QUIT.
	quitTimeout = 5 * time.Second
	// bdatCloseWait is how long a BDAT message waits, before its final dot, for the FIN of a
	// client that might have closed the connection (see Data).
	bdatCloseWait = 20 * time.Millisecond
)

// copyBuffers hold message data on its way to the backend.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// state is where a session stands.
type state uint8

const (
	stateNew         state = iota // not authenticated
	stateReady                    // authenticated; no transaction open on the backend
	stateTransaction              // MAIL accepted by the backend
)

// session is go-smtp's Session for one connection, from the first EHLO (or the first after
// STARTTLS) to Logout. go-smtp calls it from the connection's goroutine, except Data for BDAT,
// which runs on a goroutine of its own while Reset or Logout may be called: mu orders them.
type session struct {
	c   *conn
	tls bool
	bnd proxy.Conn // what the credentials are checked against (TLS state, served certificate)
	nc  net.Conn   // what go-smtp writes to (TLS, if any)
	log *slog.Logger

	mu     sync.Mutex
	state  state
	user   string
	secret backends.Secret // to log in again when the backend session is lost
	route  backends.Route  // where, likewise
	be     *backends.SMTPSession
}

var _ gosmtp.AuthSession = (*session)(nil)

func (c *conn) newSession(sc *gosmtp.Conn) (gosmtp.Session, error) {
	st, isTLS := sc.TLSConnectionState()
	if !isTLS && c.plainTLS != nil {
		st, isTLS = *c.plainTLS, true
	}
	s := &session{c: c, tls: isTLS, nc: sc.Conn(), log: c.log}
	if isTLS {
		s.bnd = proxy.Conn{TLS: &st, Served: c.served}
	}
	return s, nil
}

// authReplies is the SMTP column of DESIGN.md's error table (RFC 4954 §6), by the login
// pipeline's outcome.
var authReplies = map[proxy.Kind]*gosmtp.SMTPError{
	proxy.Refused:            errAuthFailed,
	proxy.Malformed:          errAuthMalformed,
	proxy.IdPUnavailable:     errAuthTemporary,
	proxy.BackendUnavailable: errAuthTemporary,
	proxy.BackendRefused:     errAuthTemporary,
	proxy.Delayed:            errAuthTemporary,
	proxy.Error:              errAuthTemporary,
}

// reply maps an error of the relay to the reply the client gets: replies of the backend, and
// saslgate's own, pass unchanged; a broken backend connection is 421 and the end.
func (s *session) reply(err error) error {
	var se *gosmtp.SMTPError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se) && !errors.Is(err, backends.ErrUnavailable) && !errors.Is(err, backends.ErrRejected):
		if se.Code == 421 {
			// RFC 5321 §3.8: the backend is closing; so is this session.
			s.c.hangUp()
		}
		return se
	default:
		// The backend connection broke and logging in again failed.
		s.log.Error("backend session lost", "reason", err)
		s.c.hangUp()
		return errBackendLost
	}
}

// AuthMechanisms implements gosmtp.AuthSession: none before TLS (RFC 7628 §3: TLS "MUST be
// used for OAUTHBEARER"), so EHLO announces AUTH only once TLS is up.
func (s *session) AuthMechanisms() []string {
	if !s.tls {
		return nil
	}
	return []string{sasl.OAuthBearer, sasl.XOAuth2}
}

// Auth implements gosmtp.AuthSession. Before TLS it refuses at once with 538 5.7.11, so no
// 334 ever asks for a token over plain text.
func (s *session) Auth(mech string) (gosasl.Server, error) {
	if !s.tls {
		return nil, errEncryptionRequired
	}
	if mech != sasl.OAuthBearer && mech != sasl.XOAuth2 {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	srv := s.c.s
	a := &authExchange{s: s, Attempt: proxy.Attempt{
		Protocol: Protocol.Name, Mechanism: mech, Listener: srv.Listener, Conn: s.bnd,
		Client: s.c.client, Log: s.log, Observer: s.c.obs,
	}}
	a.Dial = func(ctx context.Context, r backends.Route, secret backends.Secret) (err error) {
		a.secret = secret
		a.be, err = srv.dial(ctx, r, secret, s.c.client)
		return err
	}
	if err := srv.Login.Wait(&a.Attempt, s.c.preauth, srv.fe.Sessions.Done()); err != nil {
		// The delay outlasts the pre-authentication time, or the server is shutting down.
		a.finish(err)
		s.c.hangUp()
		return nil, errAuthTemporary
	}
	a.sasl = sasl.NewOAuthBearer(a.authenticate)
	if mech == sasl.XOAuth2 {
		a.sasl = sasl.NewXOAuth2(a.authenticate)
	}
	return a, nil
}

// authExchange is one AUTH command: proxy/sasl's mechanism, the login pipeline it runs, and
// the wait for the client's answer to an error challenge.
type authExchange struct {
	proxy.Attempt
	s       *session
	sasl    gosasl.Server
	failure *sasl.Failure // what the error challenge reports
	outcome *proxy.Outcome
	secret  backends.Secret
	be      *backends.SMTPSession
}

var _ gosasl.Server = (*authExchange)(nil)

// authenticate is the mechanisms' proxy/sasl Authenticator: the login pipeline.
func (a *authExchange) authenticate(creds sasl.Credentials) error {
	// The pre-authentication deadline also bounds the IdP and backend work.
	ctx, cancel := context.WithDeadline(context.Background(), a.s.c.preauth)
	defer cancel()
	err := a.s.c.s.Login.Run(ctx, &a.Attempt, creds)
	errors.As(err, &a.failure) // for the error challenge, if it is a *sasl.Failure
	return err
}

// finish observes the exchange's outcome once (the pipeline's log line and metric).
func (a *authExchange) finish(err error) proxy.Outcome {
	if a.outcome == nil {
		o := a.s.c.s.Login.Finish(&a.Attempt, err)
		a.outcome = &o
	}
	return *a.outcome
}

// Next implements gosasl.Server.
func (a *authExchange) Next(response []byte) ([]byte, bool, error) {
	a.s.c.disarm()
	challenge, done, err := a.sasl.Next(response)
	switch {
	case err != nil:
		return nil, true, authReplies[a.finish(err).Kind]
	case done:
		a.s.loggedIn(a)
		return nil, true, nil
	case len(challenge) > 0:
		// Both mechanisms' only non-empty challenge is the RFC 7628 §3.2.2 error challenge,
		// which the client must answer (§3.2.3). Some never do: fail on our own after a
		// short wait. The outcome is decided now, and observed now: the client may cancel or
		// vanish instead of answering.
		if a.failure == nil {
			// The mechanism failed the message itself: a bare kvsep (RFC 7628 §3.1).
			a.failure = &sasl.Failure{Status: sasl.StatusInvalidRequest, Err: errors.New("smtp: no credentials in the client response")}
		}
		a.finish(a.failure)
		wait := min(a.s.c.s.Config.ErrorReplyTimeout.Or(DefaultErrorReplyTimeout), time.Until(a.s.c.preauth))
		a.s.c.arm(wait, a.noReply)
	}
	return challenge, false, nil
}

// noReply ends an exchange whose error challenge got no answer: the 535 it would have got,
// then the connection closes (go-smtp is still waiting for the answer and cannot be told).
func (a *authExchange) noReply() {
	a.s.log.Debug("authentication", "outcome", "failure", "mech", a.Mechanism, "reason", errNoReply)
	r := authReplies[a.finish(a.failure).Kind]
	_ = a.s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(a.s.nc, "%d %d.%d.%d %s\r\n", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
	a.s.nc.Close()
}

func (s *session) loggedIn(a *authExchange) {
	o := a.finish(nil)
	s.mu.Lock()
	s.state, s.user, s.secret, s.route, s.be = stateReady, o.Identity.User, a.secret, a.Route(), a.be
	s.log = s.log.With("user", o.Identity.User)
	s.mu.Unlock()
	s.c.setBackend(a.be)
	s.c.authed.Store(true)
	s.c.obs.SessionAuthenticated()
}

// Mail implements gosmtp.Session.
func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateNew:
		return errAuthRequired
	case s.c.hangup.Load():
		// A 421 went out; these are commands the client pipelined behind it.
		return errBackendLost
	}
	if !s.senderAllowed(from) {
		s.log.Info("sender refused by sender_policy", "from", from)
		return errSenderNotOwned
	}
	relay := *opts
	// RFC 4954 §5: AUTH= asserts who submitted the message; saslgate does not vouch for the
	// client's claim, and the backend knows the user from the login.
	relay.Auth = nil
	err := s.backendMail(from, &relay)
	if err == nil {
		s.state = stateTransaction
	}
	return s.reply(err)
}

// senderAllowed applies Config.SenderPolicy to the envelope sender.
func (s *session) senderAllowed(from string) bool {
	cfg := s.c.s.Config
	if cfg.SenderPolicy != SenderToken {
		return true
	}
	if strings.Contains(s.user, "@") && strings.EqualFold(from, s.user) {
		return true
	}
	for _, alias := range cfg.SenderAliases[s.user] {
		if strings.EqualFold(from, alias) {
			return true
		}
	}
	return false
}

// backendMail sends MAIL to the backend, logging in first when there is no backend session.
// One the backend dropped while idle (RFC 5321 §4.5.3.2.7: a 421 or a closed connection) gets
// one new login: nothing of a transaction is lost before MAIL.
func (s *session) backendMail(from string, opts *gosmtp.MailOptions) error {
	for retry := s.be != nil; ; retry = false {
		if s.be == nil {
			start := time.Now()
			be, err := s.c.s.dial(context.Background(), s.route, s.secret, s.c.client)
			s.c.obs.BackendLogin(time.Since(start), proxy.BackendResult(err))
			s.c.s.Login.ObserveMember(Protocol.Name, s.route, err)
			if err != nil {
				return err
			}
			s.be = be
			s.c.setBackend(be)
		}
		if err := checkParams(s.be.Extensions, mailParams(opts)); err != nil {
			return err
		}
		err := s.be.Client.Mail(from, opts)
		var se *gosmtp.SMTPError
		if err == nil || !retry || errors.As(err, &se) && se.Code != 421 {
			return err
		}
		s.log.Info("backend session lost; logging in again", "reason", err)
		s.dropBackend()
	}
}

// param is an ESMTP parameter in use and the extension the backend must offer for it.
type param struct {
	used      bool
	extension string
}

func mailParams(o *gosmtp.MailOptions) []param {
	return []param{
		{o.Body == gosmtp.Body8BitMIME, "8BITMIME"},
		{o.UTF8, "SMTPUTF8"},
		{o.RequireTLS, "REQUIRETLS"},
		{o.Return != "" || o.EnvelopeID != "", "DSN"},
	}
}

// checkParams refuses parameters this backend session does not offer (RFC 5321 §4.1.1.11:
// 555), which go-smtp's client would otherwise drop or refuse. EHLO announced them from the
// last probe; the backend may have changed since.
func checkParams(ext backends.Extensions, params []param) error {
	for _, p := range params {
		if p.used && !ext.Has(p.extension) {
			return errParamUnsupported
		}
	}
	return nil
}

// Rcpt implements gosmtp.Session.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateTransaction || s.be == nil {
		return s.reply(errNoBackend)
	}
	dsn := param{len(opts.Notify) > 0 || opts.OriginalRecipient != "", "DSN"}
	if err := checkParams(s.be.Extensions, []param{dsn}); err != nil {
		return err
	}
	return s.reply(s.be.Client.Rcpt(to, opts))
}

// Data implements gosmtp.Session. go-smtp hands over DATA and BDAT alike as one reader of the
// message; it goes to the backend as DATA (go-smtp's client has no BDAT; without BINARYMIME
// every message has a DATA form), streamed, never held whole.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateTransaction || s.be == nil {
		return s.reply(errNoBackend)
	}
	w, err := s.be.Client.Data()
	if err != nil {
		return s.reply(err)
	}
	buf := copyBuffers.Get().(*[]byte)
	n, err := io.CopyBuffer(backendWriter{w}, r, *buf)
	copyBuffers.Put(buf)
	s.c.obs.Relayed(n, 0)
	if _, bdat := r.(*io.PipeReader); bdat && err == nil && s.c.clientGone(bdatCloseWait) {
		// go-smtp takes a last BDAT chunk cut short by the client closing the connection for
		// a whole one (its chunk copy sees io.EOF): a client that is gone now may not have
		// sent its whole message. Only a FIN later than bdatCloseWait escapes this check.
		err = errClientClosed
	}
	s.state = stateReady
	if err != nil {
		// RFC 5321 §4.1.1.4: a message is delivered only once its final dot is sent. Closing
		// the backend connection without it abandons the transaction.
		s.dropBackend()
		if errors.Is(err, errBackendWrite) {
			return s.reply(err)
		}
		// The client's side: gone, RSET during BDAT, or over the size limit (go-smtp's
		// 552 5.3.4). go-smtp answers, if there is anyone to answer.
		s.log.Info("message aborted; backend transaction abandoned", "reason", err)
		return err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return s.reply(err)
	}
	return dataReply(resp.StatusText)
}

// backendWriter marks errors writing to the backend, to tell them from the client's.
type backendWriter struct{ w io.Writer }

func (b backendWriter) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errBackendWrite, err)
	}
	return n, err
}

// dataReply is the backend's reply to the final dot, passed on with its enhanced code and
// text (often a queue id): go-smtp writes a returned *SMTPError as it is, even a 250.
func dataReply(text string) error {
	code, msg := gosmtp.EnhancedCodeNotSet, text
	if first, rest, ok := strings.Cut(text, " "); ok {
		if c, ok := parseEnhancedCode(first, 2); ok {
			// RFC 2034 §4: the code begins every line of a multi-line reply.
			code, msg = c, strings.ReplaceAll(rest, "\n"+first+" ", "\n")
		}
	}
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: code, Message: msg}
}

// parseEnhancedCode parses an RFC 3463 status code "class.subject.detail" of the given class.
func parseEnhancedCode(s string, class int) (gosmtp.EnhancedCode, bool) {
	var code gosmtp.EnhancedCode
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return code, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return code, false
		}
		code[i] = n
	}
	return code, code[0] == class
}

// Reset implements gosmtp.Session: a transaction open on the backend is aborted with RSET.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateTransaction {
		return
	}
	s.state = stateReady
	if s.be != nil {
		if err := s.be.Client.Reset(); err != nil {
			s.log.Info("backend RSET failed; backend session dropped", "reason", err)
			s.dropBackend()
		}
	}
}

// Logout implements gosmtp.Session: the backend session ends with QUIT (RFC 5321 §4.1.1.10),
// which also abandons an open transaction. go-smtp calls it outside its panic recovery.
func (s *session) Logout() error {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in Logout", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.be != nil {
		s.be.Client.CommandTimeout = quitTimeout
		if err := s.be.Client.Quit(); err != nil {
			s.be.Close()
		}
		s.be = nil
		s.c.setBackend(nil)
	}
	return nil
}

func (s *session) dropBackend() {
	if s.be != nil {
		s.be.Close()
		s.be = nil
		s.c.setBackend(nil)
	}
}
