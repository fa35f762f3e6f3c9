package probe

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// imapReply is one parsed IMAP server line.
type imapReply struct {
	tag    string // "*", "+" or a command tag
	status string // OK, NO, BAD, BYE, PREAUTH, or the untagged data's name (CAPABILITY)
	rest   string // after the status
}

func parseIMAP(line string) imapReply {
	tag, rest, _ := strings.Cut(line, " ")
	if tag == "+" {
		return imapReply{tag: tag, rest: rest}
	}
	status, rest, _ := strings.Cut(rest, " ")
	return imapReply{tag: tag, status: strings.ToUpper(status), rest: rest}
}

// capabilityCode returns the capability list of a "[CAPABILITY ...]" response code.
func capabilityCode(rest string) []string {
	code, ok := strings.CutPrefix(rest, "[")
	if !ok {
		return nil
	}
	code, _, _ = strings.Cut(code, "]")
	name, args, _ := strings.Cut(code, " ")
	if !strings.EqualFold(name, "CAPABILITY") {
		return nil
	}
	return strings.Fields(args)
}

func (s *session) imap() error {
	line, err := s.readLine()
	if err != nil {
		return err
	}
	s.res.Greeting = line
	g := parseIMAP(line)
	switch {
	case g.tag == "*" && g.status == "OK":
	case g.tag == "*" && g.status == "PREAUTH":
		return errors.New("probe: the server greeted with PREAUTH: it logged in on its own")
	default:
		return fmt.Errorf("probe: not an IMAP greeting: %.100q", line)
	}
	caps := capabilityCode(g.rest)
	tags := 0
	cmd := func(text, shown string) (string, error) {
		tags++
		tag := "p" + strconv.Itoa(tags)
		if shown != "" {
			shown = tag + " " + shown
		}
		if err := s.send(tag+" "+text, shown); err != nil {
			return "", err
		}
		return tag, nil
	}

	if s.opts.TLS == TLSStartTLS {
		if caps == nil {
			if caps, err = s.imapCapability(cmd); err != nil {
				return err
			}
		}
		if !hasCap(caps, "STARTTLS") {
			s.note("the server does not advertise STARTTLS; trying anyway")
		}
		tag, err := cmd("STARTTLS", "")
		if err != nil {
			return err
		}
		r, err := s.imapTagged(tag, nil)
		if err != nil {
			return err
		}
		if r.status != "OK" {
			return fmt.Errorf("probe: STARTTLS refused: %s %s", r.status, r.rest)
		}
		// RFC 9051 §6.2.1: capabilities learnt before TLS are discarded.
		if err := s.handshake(); err != nil {
			return err
		}
		caps = nil
	}
	if caps == nil || s.opts.TLS == TLSStartTLS {
		if caps, err = s.imapCapability(cmd); err != nil {
			return err
		}
	}
	s.res.Capabilities = caps

	if s.opts.Mechanism != "" {
		if err := s.imapAuthenticate(cmd, caps); err != nil {
			// Say goodbye anyway; a refused login leaves the session usable.
			if errors.Is(err, ErrAuthFailed) {
				if tag, werr := cmd("LOGOUT", ""); werr == nil {
					_, _ = s.imapTagged(tag, nil)
				}
			}
			return err
		}
	}
	tag, err := cmd("LOGOUT", "")
	if err != nil {
		return err
	}
	_, err = s.imapTagged(tag, nil)
	return err
}

func (s *session) imapCapability(cmd func(string, string) (string, error)) ([]string, error) {
	tag, err := cmd("CAPABILITY", "")
	if err != nil {
		return nil, err
	}
	var caps []string
	r, err := s.imapTagged(tag, func(u imapReply) {
		if u.status == "CAPABILITY" {
			caps = strings.Fields(u.rest)
		}
	})
	if err != nil {
		return nil, err
	}
	if r.status != "OK" || caps == nil {
		return nil, fmt.Errorf("probe: CAPABILITY failed: %s %s", r.status, r.rest)
	}
	return caps, nil
}

func (s *session) imapAuthenticate(cmd func(string, string) (string, error), caps []string) error {
	mech := s.opts.Mechanism
	if !hasCap(caps, "AUTH="+mech) {
		s.note("the server does not advertise AUTH=%s; trying anyway", mech)
	}
	raw, shown, err := s.message()
	if err != nil {
		return err
	}
	ir := base64.StdEncoding.EncodeToString(raw)
	var tag string
	if hasCap(caps, "SASL-IR") && !s.opts.NoInitialResponse {
		tag, err = cmd("AUTHENTICATE "+mech+" "+ir, "AUTHENTICATE "+mech+" "+shown)
		if err != nil {
			return err
		}
	} else {
		if tag, err = cmd("AUTHENTICATE "+mech, ""); err != nil {
			return err
		}
		line, err := s.readLine()
		if err != nil {
			return err
		}
		r := parseIMAP(line)
		if r.tag == tag {
			return s.imapDone(r)
		}
		if r.tag != "+" {
			return fmt.Errorf("probe: want a continuation request, got %.100q", line)
		}
		if err := s.send(ir, shown); err != nil {
			return err
		}
	}
	for {
		line, err := s.readLine()
		if err != nil {
			return err
		}
		r := parseIMAP(line)
		switch r.tag {
		case "+":
			s.noteChallenge(r.rest)
			if err := s.send(s.errorReply(), ""); err != nil {
				return err
			}
		case tag:
			return s.imapDone(r)
		case "*":
			if r.status == "BYE" {
				return fmt.Errorf("probe: server said BYE: %s", r.rest)
			}
		default:
			return fmt.Errorf("probe: response for unknown tag: %.100q", line)
		}
	}
}

// imapDone interprets the tagged completion of AUTHENTICATE.
func (s *session) imapDone(r imapReply) error {
	s.res.Final = r.status + " " + r.rest
	if r.status != "OK" {
		return fmt.Errorf("%w: %s %s", ErrAuthFailed, r.status, s.redact(r.rest))
	}
	s.res.Authenticated = true
	if c := capabilityCode(r.rest); c != nil {
		s.res.Capabilities = c
	}
	s.note("authenticated with %s", s.opts.Mechanism)
	return nil
}

// imapTagged reads until the completion of tag, passing untagged data to each.
func (s *session) imapTagged(tag string, each func(imapReply)) (imapReply, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return imapReply{}, err
		}
		r := parseIMAP(line)
		switch {
		case r.tag == tag:
			return r, nil
		case r.tag == "*":
			// An untagged BYE precedes LOGOUT's OK; elsewhere the server closes next,
			// and the read error says so after the BYE in the transcript.
			if each != nil {
				each(r)
			}
		default:
			return imapReply{}, fmt.Errorf("probe: unexpected %.100q", line)
		}
	}
}

func hasCap(caps []string, c string) bool {
	for _, x := range caps {
		if strings.EqualFold(x, c) {
			return true
		}
	}
	return false
}
