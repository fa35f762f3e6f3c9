package probe

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// maxPOP3Command is the longest POP3 command line, CRLF included (RFC 2449 §4). RFC 5034 §4:
// an initial response that would make AUTH longer goes after the server's "+ " instead.
const maxPOP3Command = 255

// pop3OK reports whether line is a positive status (RFC 1939 §3: "+OK", then SP or the end).
func pop3OK(line string) bool {
	rest, ok := strings.CutPrefix(line, "+OK")
	return ok && (rest == "" || rest[0] == ' ')
}

// pop3Continue returns the payload of an AUTH continuation ("+ " and base64, RFC 5034 §4;
// "+" alone is taken as the empty one).
func pop3Continue(line string) (payload string, ok bool) {
	if line == "+" {
		return "", true
	}
	payload, ok = strings.CutPrefix(line, "+ ")
	return payload, ok
}

func (s *session) pop3Cmd(line, shown string) (string, error) {
	if err := s.send(line, shown); err != nil {
		return "", err
	}
	return s.readLine()
}

func (s *session) pop3() error {
	line, err := s.readLine()
	if err != nil {
		return err
	}
	s.res.Greeting = line
	if !pop3OK(line) {
		return fmt.Errorf("probe: not a POP3 greeting: %.100q", line)
	}
	if s.opts.TLS == TLSStartTLS {
		caps, err := s.capa()
		if err != nil {
			return err
		}
		if !hasExt(caps, "STLS") {
			s.note("the server does not advertise STLS; trying anyway")
		}
		r, err := s.pop3Cmd("STLS", "")
		if err != nil {
			return err
		}
		if !pop3OK(r) {
			return fmt.Errorf("probe: STLS refused: %s", r)
		}
		// RFC 2595 §4: what was learnt before TLS is discarded, and so is anything the
		// server sent behind its +OK in the clear (the old reader goes).
		if err := s.handshake(); err != nil {
			return err
		}
	}
	caps, err := s.capa()
	if err != nil {
		return err
	}
	s.res.Capabilities = caps
	if s.opts.Mechanism != "" {
		if err := s.pop3Auth(caps); err != nil {
			// A refused AUTH leaves the AUTHORIZATION state (RFC 5034 §4): QUIT still works.
			if errors.Is(err, ErrAuthFailed) {
				_, _ = s.pop3Cmd("QUIT", "")
			}
			return err
		}
	}
	_, err = s.pop3Cmd("QUIT", "")
	return err
}

// capa runs CAPA (RFC 2449 §5) and returns its lines; nil, and no error, when the server
// answers -ERR (an RFC 1939 server without CAPA).
func (s *session) capa() ([]string, error) {
	r, err := s.pop3Cmd("CAPA", "")
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(r, "-ERR"):
		s.note("the server has no CAPA (RFC 2449): its capabilities are unknown")
		return nil, nil
	case !pop3OK(r):
		return nil, fmt.Errorf("probe: not a POP3 reply to CAPA: %.100q", r)
	}
	caps := []string{}
	for {
		line, err := s.readLine()
		if err != nil {
			return nil, err
		}
		if line == "." {
			return caps, nil
		}
		if len(caps) == maxCapabilities {
			return nil, fmt.Errorf("probe: more than %d CAPA lines", maxCapabilities)
		}
		// RFC 2449 §5 (RFC 1939 §3): a line starting with "." is byte-stuffed.
		caps = append(caps, strings.TrimPrefix(line, "."))
	}
}

// pop3Auth runs AUTH (RFC 5034 §4): the mechanism, the client message on the AUTH line when
// it fits, else after the server's "+ ", then the reply to an error challenge.
func (s *session) pop3Auth(caps []string) error {
	mech := s.opts.Mechanism
	if !offers(caps, "SASL", mech) {
		s.note("the server does not advertise SASL %s; trying anyway", mech)
	}
	raw, shown, err := s.message()
	if err != nil {
		return err
	}
	ir := base64.StdEncoding.EncodeToString(raw)
	cmd := "AUTH " + mech
	var r string
	if !s.opts.NoInitialResponse && len(cmd)+1+len(ir)+2 <= maxPOP3Command {
		r, err = s.pop3Cmd(cmd+" "+ir, cmd+" "+shown)
	} else {
		if !s.opts.NoInitialResponse {
			s.note("the AUTH line with the initial response would be longer than %d octets: it follows the server's \"+ \" (RFC 5034 §4)", maxPOP3Command)
		}
		if r, err = s.pop3Cmd(cmd, ""); err != nil {
			return err
		}
		if _, ok := pop3Continue(r); !ok {
			return s.pop3Done(r)
		}
		r, err = s.pop3Cmd(ir, shown)
	}
	for n := 0; err == nil; n++ {
		chal, ok := pop3Continue(r)
		if !ok {
			return s.pop3Done(r)
		}
		if n == maxChallenges {
			return fmt.Errorf("probe: more than %d challenges", maxChallenges)
		}
		s.noteChallenge(chal)
		r, err = s.pop3Cmd(s.errorReply(), "")
	}
	return err
}

// pop3Done interprets the server's last reply to AUTH: +OK, or -ERR with the RFC 2449 §8
// response code that says why ([AUTH], [SYS/TEMP]).
func (s *session) pop3Done(r string) error {
	s.res.Final = r
	switch {
	case pop3OK(r):
		s.res.Authenticated = true
		s.note("authenticated with %s", s.opts.Mechanism)
		return nil
	case strings.HasPrefix(r, "-ERR"):
		return fmt.Errorf("%w: %s", ErrAuthFailed, s.redact(r))
	}
	return fmt.Errorf("probe: not a POP3 reply to AUTH: %.100q", s.redact(r))
}
