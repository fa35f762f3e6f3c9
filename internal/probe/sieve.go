package probe

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/saslgate/saslgate/internal/sievewire"
)

// maxSieveQuoted is the longest quoted string a client sends (RFC 5804 §4: quoted =
// DQUOTE *1024QUOTED-CHAR DQUOTE); a longer one goes as a non-synchronising literal.
const maxSieveQuoted = 1024

// sieveLine is one logical server line, its literals read.
type sieveLine struct {
	items []sievewire.Item
	text  string // as the server sent it, literals inline, for messages
}

// response returns the kind of a response-oknobye (RFC 5804 §4), OK, NO or BYE, and whether
// the line is one.
func (l sieveLine) response() (kind string, ok bool) {
	if len(l.items) == 0 || l.items[0].Kind != 'a' {
		return "", false
	}
	kind = strings.ToUpper(l.items[0].S)
	return kind, kind == "OK" || kind == "NO" || kind == "BYE"
}

// capability returns the line as a capability (RFC 5804 §1.7): a string name and an optional
// string value, as "NAME value".
func (l sieveLine) capability() (string, bool) {
	switch {
	case len(l.items) == 1 && l.items[0].Kind == 's':
		return l.items[0].S, true
	case len(l.items) == 2 && l.items[0].Kind == 's' && l.items[1].Kind == 's':
		return strings.TrimSpace(l.items[0].S + " " + l.items[1].S), true
	}
	return "", false
}

// sieveRead reads one logical server line, the literals it announces ("{n}" CRLF n octets,
// RFC 5804 §4 literal-s2c) included, within maxLine, maxLiteral and maxSieveLiterals.
func (s *session) sieveRead() (sieveLine, error) {
	var l sieveLine
	for literals := 0; ; literals++ {
		line, err := s.readLine()
		if err != nil {
			return l, err
		}
		n, _, isLit, err := sievewire.Tokenize([]byte(line), &l.items)
		switch {
		case err != nil:
			return l, fmt.Errorf("probe: not a ManageSieve line (%v): %.100q", err, s.redact(line))
		case !isLit:
			l.text += line
			return l, nil
		case literals == maxSieveLiterals:
			return l, fmt.Errorf("probe: more than %d literals in one line", maxSieveLiterals)
		case n > maxLiteral:
			return l, fmt.Errorf("probe: literal of %d octets, more than %d", n, maxLiteral)
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(s.br, lit); err != nil {
			return l, fmt.Errorf("probe: read: literal of %d octets: %w", n, err)
		}
		// The transcript and l.text show the literal as a Go-quoted string in place of its
		// announcement.
		quoted := strconv.Quote(string(lit))
		if s.opts.Transcript != nil {
			fmt.Fprintf(s.opts.Transcript, "S: %s\n", s.redact(quoted))
		}
		l.items = append(l.items, sievewire.Item{Kind: 's', S: string(lit)})
		l.text += line[:strings.LastIndexByte(line, '{')] + quoted
	}
}

// sieveCapabilities reads a capability response (RFC 5804 §1.7: capability lines, then OK)
// and returns the capabilities and the OK line.
func (s *session) sieveCapabilities() ([]string, string, error) {
	caps := []string{}
	for {
		l, err := s.sieveRead()
		if err != nil {
			return nil, "", err
		}
		if kind, ok := l.response(); ok {
			if kind != "OK" {
				return nil, "", fmt.Errorf("probe: the capability response ends with %.200s", s.redact(l.text))
			}
			return caps, l.text, nil
		}
		c, ok := l.capability()
		if !ok {
			return nil, "", fmt.Errorf("probe: not a ManageSieve capability: %.100q", s.redact(l.text))
		}
		if len(caps) == maxCapabilities {
			return nil, "", fmt.Errorf("probe: more than %d capabilities", maxCapabilities)
		}
		caps = append(caps, c)
	}
}

// sieveResponse reads the OK, NO or BYE that completes a command.
func (s *session) sieveResponse() (sieveLine, string, error) {
	l, err := s.sieveRead()
	if err != nil {
		return l, "", err
	}
	kind, ok := l.response()
	if !ok {
		return l, "", fmt.Errorf("probe: want OK, NO or BYE, got %.100q", s.redact(l.text))
	}
	return l, kind, nil
}

func (s *session) sieve() error {
	caps, greeting, err := s.sieveCapabilities()
	if err != nil {
		return err
	}
	s.res.Greeting = greeting
	if s.opts.TLS == TLSStartTLS {
		if !hasExt(caps, "STARTTLS") {
			s.note("the server does not advertise STARTTLS; trying anyway")
		}
		if err := s.send("STARTTLS", ""); err != nil {
			return err
		}
		l, kind, err := s.sieveResponse()
		if err != nil {
			return err
		}
		if kind != "OK" {
			return fmt.Errorf("probe: STARTTLS refused: %s", l.text)
		}
		if err := s.handshake(); err != nil {
			return err
		}
		// RFC 5804 §2.2: the server sends its capabilities again, unasked, over TLS; those
		// from before are discarded, with anything sent behind the OK in the clear.
		if caps, _, err = s.sieveCapabilities(); err != nil {
			return err
		}
	}
	s.res.Capabilities = caps
	if s.opts.Mechanism != "" {
		if err := s.sieveAuth(caps); err != nil {
			// A NO leaves the session unauthenticated (RFC 5804 §2.1): LOGOUT still works.
			if errors.Is(err, ErrAuthFailed) {
				if s.send("LOGOUT", "") == nil {
					_, _, _ = s.sieveResponse()
				}
			}
			return err
		}
	}
	if err := s.send("LOGOUT", ""); err != nil {
		return err
	}
	_, _, err = s.sieveResponse()
	return err
}

// sendSieveString sends prefix and the string value (base64, so never escaped): quoted when
// short enough, else as a non-synchronising literal (RFC 5804 §4 literal-c2s), whose data ends
// the command line. shown stands for value in the transcript when not "".
func (s *session) sendSieveString(prefix, value, shown string) error {
	if len(value) <= maxSieveQuoted {
		if shown != "" {
			shown = prefix + `"` + shown + `"`
		}
		return s.send(prefix+`"`+value+`"`, shown)
	}
	if err := s.send(prefix+"{"+strconv.Itoa(len(value))+"+}", ""); err != nil {
		return err
	}
	return s.send(value, shown)
}

// sieveAuth runs AUTHENTICATE (RFC 5804 §2.1): the mechanism and the client message as the
// initial response, or after the server's empty challenge; then the reply to an error
// challenge, a string of base64 like every challenge.
func (s *session) sieveAuth(caps []string) error {
	mech := s.opts.Mechanism
	if !offers(caps, "SASL", mech) {
		s.note("the server does not advertise SASL %s; trying anyway", mech)
	}
	raw, shown, err := s.message()
	if err != nil {
		return err
	}
	ir := base64.StdEncoding.EncodeToString(raw)
	cmd := `AUTHENTICATE "` + mech + `"`
	// next is the client's next message: the credentials, then the reply to an error
	// challenge.
	next, nextShown := ir, shown
	if s.opts.NoInitialResponse {
		err = s.send(cmd, "")
	} else {
		err = s.sendSieveString(cmd+" ", ir, shown)
		next = ""
	}
	for n := 0; err == nil; n++ {
		var l sieveLine
		if l, err = s.sieveRead(); err != nil {
			return err
		}
		if _, ok := l.response(); ok {
			return s.sieveDone(l)
		}
		chal, ok := sieveChallenge(l)
		switch {
		case !ok:
			return fmt.Errorf("probe: want a challenge string or OK, NO or BYE, got %.100q", s.redact(l.text))
		case n == maxChallenges:
			return fmt.Errorf("probe: more than %d challenges", maxChallenges)
		case next != "":
			// The empty challenge that asks for the credentials.
			err = s.sendSieveString("", next, nextShown)
			next = ""
			continue
		}
		s.noteChallenge(chal)
		err = s.sendSieveString("", s.errorReply(), "")
	}
	return err
}

// sieveChallenge returns a line that is one string: a SASL challenge.
func sieveChallenge(l sieveLine) (string, bool) {
	if len(l.items) != 1 || l.items[0].Kind != 's' {
		return "", false
	}
	return l.items[0].S, true
}

// sieveDone interprets the response that completes AUTHENTICATE: OK, or NO with the RFC 5804
// §1.3 response code that says why (TRYLATER, ENCRYPT-NEEDED, …); BYE ends the session.
func (s *session) sieveDone(l sieveLine) error {
	s.res.Final = l.text
	kind, _ := l.response()
	switch kind {
	case "OK":
		s.res.Authenticated = true
		s.note("authenticated with %s", s.opts.Mechanism)
		return nil
	case "BYE":
		return fmt.Errorf("probe: server said %s", s.redact(l.text))
	}
	return fmt.Errorf("%w: %s", ErrAuthFailed, s.redact(l.text))
}
