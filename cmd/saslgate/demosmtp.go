package main

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
)

// demoSubmission is the demo's SMTP backend: it checks the per-user secret
// like a submission server would and delivers each message into the
// recipients' in-memory INBOX, so mail sent through the demo can be read back.
type demoSubmission struct {
	key       []byte
	mailboxes map[string]*imapmemserver.User // local part → user
	mu        sync.Mutex                     // serialises deliveries
}

func (d *demoSubmission) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	return &demoSession{d: d}, nil
}

type demoSession struct {
	d    *demoSubmission
	user string
	rcpt []*imapmemserver.User
}

var _ gosmtp.AuthSession = (*demoSession)(nil)

func (s *demoSession) AuthMechanisms() []string { return []string{gosasl.Plain} }

func (s *demoSession) Auth(string) (gosasl.Server, error) {
	return gosasl.NewPlainServer(func(_, user, pass string) error {
		if _, ok := s.d.mailboxes[user]; !ok || backends.DeriveSecret(s.d.key, user).Reveal() != pass {
			// RFC 4954 §6: a refusal, not a temporary failure (a plain error would be 454).
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.user = user
		return nil
	}), nil
}

func (s *demoSession) Mail(string, *gosmtp.MailOptions) error {
	if s.user == "" {
		return gosmtp.ErrAuthRequired
	}
	return nil
}

func (s *demoSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	local, domain, _ := strings.Cut(to, "@")
	u, ok := s.d.mailboxes[strings.ToLower(local)]
	if !ok || !strings.EqualFold(domain, "example.com") {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such demo user (alice@example.com, bob@example.com)"}
	}
	s.rcpt = append(s.rcpt, u)
	return nil
}

func (s *demoSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(io.LimitReader(r, 10<<20))
	if err != nil {
		return err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	for _, u := range s.rcpt {
		if _, err := u.Append("INBOX", literal{bytes.NewReader(msg)}, &imap.AppendOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func (s *demoSession) Reset()        { s.rcpt = nil }
func (s *demoSession) Logout() error { return nil }
