package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// maxLiterals bounds the literals one command may carry before authentication.
const maxLiterals = 8

var (
	errLineTooLong = errors.New("imap: line too long")
	// errFatal wraps errors after which the stream cannot be resynchronised
	// (an oversize non-synchronising literal is already on its way).
	errFatal = errors.New("imap: connection cannot continue")
)

// badCommand is a command that could not be parsed; it gets a BAD reply with
// text, tagged when the tag was readable.
type badCommand struct {
	tag  string
	text string
}

func (e *badCommand) Error() string { return "imap: " + e.text }

type tokenKind uint8

const (
	tokAtom   tokenKind = iota // includes NIL
	tokString                  // quoted string or literal
	tokLParen
	tokRParen
)

type token struct {
	kind tokenKind
	s    string
}

// command is one parsed client command.
type command struct {
	tag  string
	name string // upper case
	args []token
}

// readLine reads one line and strips CRLF (a bare LF is tolerated). A line
// longer than max is consumed up to its LF and reported as errLineTooLong
// with the line's first bytes (for the tag), so the stream stays in step.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+2 {
			if len(line) == 0 {
				line = append(line, frag[:min(len(frag), 64)]...)
			}
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return nil, err
			}
			return line, errLineTooLong
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// literalSuffix recognises "{n}" or "{n+}" (RFC 7888) at the end of a line.
func literalSuffix(line []byte) (n int, sync bool, start int, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false, 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false, 0, false
	}
	digits := line[open+1 : len(line)-1]
	sync = true
	if len(digits) > 0 && digits[len(digits)-1] == '+' {
		digits, sync = digits[:len(digits)-1], false
	}
	if len(digits) == 0 || len(digits) > 10 {
		return 0, false, 0, false
	}
	v, err := strconv.ParseUint(string(digits), 10, 32)
	if err != nil {
		return 0, false, 0, false
	}
	return int(v), sync, open, true
}

// commandReader reads whole commands, literals included, within fixed bounds.
type commandReader struct {
	br         *bufio.Reader
	maxLine    int
	maxLiteral int
	// ready asks a synchronising literal's sender to go on ("+ Ready").
	ready func() error
}

// read returns the next command. *badCommand means the client gets BAD and the
// session continues; errors wrapping errFatal or io errors end the session.
func (r *commandReader) read() (*command, error) {
	line, err := readLine(r.br, r.maxLine)
	if errors.Is(err, errLineTooLong) {
		return nil, &badCommand{tag: firstWord(nil, line), text: "Line too long"}
	}
	if err != nil {
		return nil, err
	}
	var segs [][]byte
	var lits []string
	for {
		n, sync, start, ok := literalSuffix(line)
		if !ok {
			segs = append(segs, line)
			break
		}
		tag := firstWord(segs, line)
		if n > r.maxLiteral || len(lits) == maxLiterals {
			if !sync {
				// RFC 7888 §4: the data follows regardless; we cannot skip it safely.
				return nil, errors.Join(errFatal, &badCommand{tag: tag, text: "Literal too large"})
			}
			// RFC 9051 §7.5: after a BAD the client does not send the literal.
			return nil, &badCommand{tag: tag, text: "Literal too large"}
		}
		segs = append(segs, line[:start])
		if sync {
			if err := r.ready(); err != nil {
				return nil, err
			}
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(r.br, lit); err != nil {
			return nil, err
		}
		lits = append(lits, string(lit))
		if line, err = readLine(r.br, r.maxLine); err != nil {
			if errors.Is(err, errLineTooLong) {
				return nil, &badCommand{tag: tag, text: "Line too long"}
			}
			return nil, err
		}
	}
	return parseCommand(segs, lits)
}

// firstWord is the tag of a command being read, for error replies; "" when
// the line does not start with a valid tag and a space.
func firstWord(segs [][]byte, line []byte) string {
	if len(segs) > 0 {
		line = segs[0]
	}
	tag, _, found := bytes.Cut(line, []byte{' '})
	if !found || !validTag(tag) {
		return ""
	}
	return string(tag)
}

// validTag: tag = 1*<any ASTRING-CHAR except "+"> (RFC 9051 §9).
func validTag(tag []byte) bool {
	if len(tag) == 0 {
		return false
	}
	for _, c := range tag {
		if !isAtomChar(c) && c != ']' || c == '+' {
			return false
		}
	}
	return true
}

// isAtomChar: ATOM-CHAR = any CHAR except atom-specials (RFC 9051 §9).
func isAtomChar(c byte) bool {
	if c <= 0x20 || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// parseCommand tokenises the segments of a command; segment i is followed by
// literal i.
func parseCommand(segs [][]byte, lits []string) (*command, error) {
	first := segs[0]
	tag, rest, _ := bytes.Cut(first, []byte{' '})
	if !validTag(tag) {
		return nil, &badCommand{text: "Invalid tag"}
	}
	cmd := &command{tag: string(tag)}
	name, rest, _ := bytes.Cut(rest, []byte{' '})
	if len(name) == 0 {
		return nil, &badCommand{tag: cmd.tag, text: "Missing command"}
	}
	for _, c := range name {
		if !isAtomChar(c) {
			return nil, &badCommand{tag: cmd.tag, text: "Invalid command name"}
		}
	}
	cmd.name = strings.ToUpper(string(name))
	segs[0] = rest
	for i, seg := range segs {
		toks, err := tokenize(seg, cmd.args)
		if err != nil {
			return nil, &badCommand{tag: cmd.tag, text: err.Error()}
		}
		cmd.args = toks
		if i < len(lits) {
			cmd.args = append(cmd.args, token{kind: tokString, s: lits[i]})
		}
	}
	return cmd, nil
}

// replyText is a parse error whose text is the BAD reply's, as sent.
type replyText string

func (r replyText) Error() string { return string(r) }

const errSyntax = replyText("Syntax error in arguments")

// tokenize appends the tokens of one segment to toks.
func tokenize(b []byte, toks []token) ([]token, error) {
	for len(b) > 0 {
		switch c := b[0]; {
		case c == ' ':
			b = b[1:]
		case c == '(':
			toks, b = append(toks, token{kind: tokLParen}), b[1:]
		case c == ')':
			toks, b = append(toks, token{kind: tokRParen}), b[1:]
		case c == '"':
			s, n, err := quoted(b)
			if err != nil {
				return nil, err
			}
			toks, b = append(toks, token{kind: tokString, s: s}), b[n:]
		default:
			i := 0
			for i < len(b) && (isAtomChar(b[i]) || b[i] == ']' || b[i] == '%' || b[i] == '*') {
				i++
			}
			if i == 0 {
				return nil, errSyntax
			}
			toks, b = append(toks, token{kind: tokAtom, s: string(b[:i])}), b[i:]
		}
	}
	return toks, nil
}

// quoted parses a quoted string at the start of b (RFC 9051 §4.3) and returns
// it with the number of bytes consumed.
func quoted(b []byte) (string, int, error) {
	var sb strings.Builder
	for i := 1; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			return sb.String(), i + 1, nil
		case '\\':
			if i+1 == len(b) || (b[i+1] != '"' && b[i+1] != '\\') {
				return "", 0, replyText("Invalid escape in quoted string")
			}
			i++
			sb.WriteByte(b[i])
		case '\r', '\n', 0:
			return "", 0, errSyntax
		default:
			sb.WriteByte(c)
		}
	}
	return "", 0, replyText("Unterminated quoted string")
}
