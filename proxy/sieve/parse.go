package sieve

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/saslgate/saslgate/internal/sievewire"
)

// maxLiterals bounds the literals one line may carry before authentication.
const maxLiterals = 8

// errFatal wraps the errors after which the stream cannot be resynchronised: a literal's
// data is on its way whatever the server answers (RFC 5804 §4: a client sends only
// non-synchronising literals), so one too large, or announced at the end of a line too long,
// cannot be skipped safely.
var errFatal = errors.New("sieve: connection cannot continue")

// badInput is client input that could not be read as a command or string; it is answered
// with NO and this text (BYE when it wraps errFatal).
type badInput struct{ text string }

func (e *badInput) Error() string { return "sieve: " + e.text }

// fatal is bad input that ends the connection.
func fatal(text string) error { return errors.Join(errFatal, &badInput{text: text}) }

type itemKind uint8

const (
	itemAtom   itemKind = iota // a command name or a number
	itemString                 // a quoted string or a literal
)

// item is one element of a client line.
type item struct {
	kind itemKind
	s    string
}

// command is one parsed client command.
type command struct {
	name string // upper case (RFC 5804 §4: command names are case-insensitive)
	args []item
}

// lineReader reads the client's lines, literals included, within fixed bounds.
type lineReader struct {
	br         *bufio.Reader
	maxLine    int
	maxLiteral int
}

// read returns the items of the next line. *badInput means the client gets NO and the
// session continues; errors wrapping errFatal or I/O errors end the session.
func (r *lineReader) read() ([]item, error) {
	line, err := r.readLine()
	if err != nil {
		return nil, err
	}
	var segs [][]byte
	var lits []string
	for {
		n, start, ok := literalSuffix(line)
		if !ok {
			segs = append(segs, line)
			break
		}
		if n > r.maxLiteral || len(lits) == maxLiterals {
			return nil, fatal("Literal too large")
		}
		segs = append(segs, line[:start])
		lit := make([]byte, n)
		if _, err := io.ReadFull(r.br, lit); err != nil {
			return nil, err
		}
		lits = append(lits, string(lit))
		if line, err = r.readLine(); err != nil {
			return nil, err
		}
	}
	var items []item
	for i, seg := range segs {
		if items, err = tokenize(seg, items); err != nil {
			return nil, err
		}
		if i < len(lits) {
			items = append(items, item{kind: itemString, s: lits[i]})
		}
	}
	return items, nil
}

// readLine reads one line and strips CRLF (a bare LF is tolerated). A line longer than
// maxLine is consumed up to its LF and reported as bad input, or as fatal when it ends with a
// literal announcement, whose data follows.
func (r *lineReader) readLine() ([]byte, error) {
	var line []byte
	var tail []byte // the end of an over-long line
	for {
		frag, err := r.br.ReadSlice('\n')
		if tail == nil && len(line)+len(frag) > r.maxLine+2 {
			tail = []byte{}
		}
		if tail != nil {
			tail = append(tail, frag...)
			tail = tail[max(0, len(tail)-32):]
		} else {
			line = append(line, frag...)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	if tail != nil {
		if _, _, ok := literalSuffix(trimEOL(tail)); ok {
			return nil, fatal("Line too long")
		}
		return nil, &badInput{text: "Line too long"}
	}
	return trimEOL(line), nil
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// literalSuffix recognises a literal announcement at the end of a line: "{n+}" (RFC 5804
// §4 literal-c2s), or "{n}", which some clients send out of IMAP habit and which ManageSieve
// has no continuation request for: its data follows at once all the same.
func literalSuffix(line []byte) (n int, start int, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, 0, false
	}
	digits := bytes.TrimSuffix(line[open+1:len(line)-1], []byte("+"))
	if len(digits) == 0 || len(digits) > 10 {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(string(digits), 10, 32)
	if err != nil {
		return 0, 0, false
	}
	return int(v), open, true
}

// errSyntax is the answer to a line whose items cannot be told apart.
var errSyntax = &badInput{text: "Syntax error"}

// tokenize appends the items of one segment of a line to items.
func tokenize(b []byte, items []item) ([]item, error) {
	for len(b) > 0 {
		switch c := b[0]; {
		case c == ' ':
			b = b[1:]
		case c == '"':
			s, n, err := quoted(b)
			if err != nil {
				return nil, err
			}
			items, b = append(items, item{kind: itemString, s: s}), b[n:]
		default:
			i := 0
			for i < len(b) && sievewire.IsAtomChar(b[i]) {
				i++
			}
			if i == 0 {
				return nil, errSyntax
			}
			items, b = append(items, item{kind: itemAtom, s: string(b[:i])}), b[i:]
		}
	}
	return items, nil
}

// quoted parses a quoted string at the start of b (RFC 5804 §4: QUOTED-CHAR is a
// SAFE-UTF8-CHAR or an escaped DQUOTE or backslash) and returns it with the number of bytes
// consumed. RFC 5804 bounds a quoted string at 1024 octets; real clients send longer ones
// (Roundcube's XOAUTH2 initial response holds a whole JWT), so only the line bound applies.
func quoted(b []byte) (string, int, error) {
	var sb strings.Builder
	for i := 1; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			return sb.String(), i + 1, nil
		case '\\':
			if i+1 == len(b) || (b[i+1] != '"' && b[i+1] != '\\') {
				return "", 0, &badInput{text: "Invalid escape in quoted string"}
			}
			i++
			sb.WriteByte(b[i])
		case 0, '\r', '\n':
			return "", 0, errSyntax
		default:
			sb.WriteByte(c)
		}
	}
	return "", 0, &badInput{text: "Unterminated quoted string"}
}

// parseCommand makes a command of a line's items: a command name, then its arguments.
func parseCommand(items []item) (*command, error) {
	if len(items) == 0 {
		return nil, &badInput{text: "Empty command"}
	}
	if items[0].kind != itemAtom {
		return nil, &badInput{text: "Expected a command name"}
	}
	return &command{name: strings.ToUpper(items[0].s), args: items[1:]}, nil
}

// oneString returns the one string a line holds: a SASL response (RFC 5804 §2.1).
func oneString(items []item) (item, bool) {
	if len(items) != 1 || items[0].kind != itemString {
		return item{}, false
	}
	return items[0], true
}

// sieveString is s as a server's ManageSieve string (RFC 5804 §4): quoted when it is short
// and holds only UTF-8 without CR, LF, NUL or other controls, else a literal (literal-s2c).
func sieveString(s string) string {
	if len(s) <= 1024 && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	return "{" + strconv.Itoa(len(s)) + "}\r\n" + s
}
