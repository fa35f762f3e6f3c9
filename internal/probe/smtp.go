package probe

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// smtpReply is one complete, possibly multiline, SMTP reply (RFC 5321 §4.2).
type smtpReply struct {
	code  int
	lines []string // text of each line, without code and separator
}

func (r smtpReply) String() string {
	return strconv.Itoa(r.code) + " " + strings.Join(r.lines, " / ")
}

func (s *session) smtpRead() (smtpReply, error) {
	var r smtpReply
	for {
		line, err := s.readLine()
		if err != nil {
			return r, err
		}
		if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return r, fmt.Errorf("probe: not an SMTP reply: %.100q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 || (r.code != 0 && code != r.code) {
			return r, fmt.Errorf("probe: not an SMTP reply: %.100q", line)
		}
		r.code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		r.lines = append(r.lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return r, nil
		}
	}
}

func (s *session) smtpCmd(line, shown string) (smtpReply, error) {
	if err := s.send(line, shown); err != nil {
		return smtpReply{}, err
	}
	return s.smtpRead()
}

func (s *session) ehlo() ([]string, error) {
	name := s.opts.EHLOName
	if name == "" {
		name = "localhost"
	}
	r, err := s.smtpCmd("EHLO "+name, "")
	if err != nil {
		return nil, err
	}
	if r.code != 250 {
		return nil, fmt.Errorf("probe: EHLO refused: %s", r)
	}
	// The first line is the server's name; each further line is one extension.
	return r.lines[1:], nil
}

func (s *session) smtp() error {
	g, err := s.smtpRead()
	if err != nil {
		return err
	}
	s.res.Greeting = g.String()
	if g.code != 220 {
		return fmt.Errorf("probe: SMTP greeting is not 220: %s", g)
	}
	exts, err := s.ehlo()
	if err != nil {
		return err
	}
	if s.opts.TLS == TLSStartTLS {
		if !hasExt(exts, "STARTTLS") {
			s.note("the server does not advertise STARTTLS; trying anyway")
		}
		r, err := s.smtpCmd("STARTTLS", "")
		if err != nil {
			return err
		}
		if r.code != 220 {
			return fmt.Errorf("probe: STARTTLS refused: %s", r)
		}
		if err := s.handshake(); err != nil {
			return err
		}
		// RFC 3207 §4.2: forget what was learnt before TLS and say EHLO again.
		if exts, err = s.ehlo(); err != nil {
			return err
		}
	}
	s.res.Capabilities = exts
	if s.opts.Mechanism != "" {
		if err := s.smtpAuth(exts); err != nil {
			if errors.Is(err, ErrAuthFailed) {
				_, _ = s.smtpCmd("QUIT", "")
			}
			return err
		}
	}
	_, err = s.smtpCmd("QUIT", "")
	return err
}

func (s *session) smtpAuth(exts []string) error {
	mech := s.opts.Mechanism
	if !offers(exts, "AUTH", mech) {
		s.note("the server does not advertise AUTH %s; trying anyway", mech)
	}
	raw, shown, err := s.message()
	if err != nil {
		return err
	}
	ir := base64.StdEncoding.EncodeToString(raw)
	var r smtpReply
	if s.opts.NoInitialResponse {
		if r, err = s.smtpCmd("AUTH "+mech, ""); err != nil {
			return err
		}
		if r.code != 334 {
			return s.smtpDone(r)
		}
		r, err = s.smtpCmd(ir, shown)
	} else {
		r, err = s.smtpCmd("AUTH "+mech+" "+ir, "AUTH "+mech+" "+shown)
	}
	if err != nil {
		return err
	}
	if r.code == 334 {
		s.noteChallenge(r.lines[0])
		if r, err = s.smtpCmd(s.errorReply(), ""); err != nil {
			return err
		}
	}
	return s.smtpDone(r)
}

func (s *session) smtpDone(r smtpReply) error {
	s.res.Final = r.String()
	if r.code != 235 {
		return fmt.Errorf("%w: %s", ErrAuthFailed, s.redact(r.String()))
	}
	s.res.Authenticated = true
	s.note("authenticated with %s", s.opts.Mechanism)
	return nil
}

func hasExt(exts []string, name string) bool {
	for _, e := range exts {
		kw, _, _ := strings.Cut(e, " ")
		if strings.EqualFold(kw, name) {
			return true
		}
	}
	return false
}

// offers reports whether a line of lines, keyword and space-separated values (an SMTP EHLO
// line "AUTH PLAIN LOGIN", a POP3 CAPA line "SASL OAUTHBEARER", a ManageSieve capability
// "SASL PLAIN"), lists value. Keywords and values are case-insensitive.
func offers(lines []string, keyword, value string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && strings.EqualFold(f[0], keyword) {
			for _, v := range f[1:] {
				if strings.EqualFold(v, value) {
					return true
				}
			}
		}
	}
	return false
}
