// Package sievewire tokenizes the lines a ManageSieve server sends (RFC 5804 §4): atoms,
// strings and parentheses, and the literal announcement a line may end with. backends'
// dialer and the probe tool read servers with it; proxy/sieve, which reads clients, shares
// its ATOM-CHAR.
package sievewire

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Item is one item of a server line.
type Item struct {
	// Kind is 'a' for an atom, 's' for a string (quoted, or a literal the caller read), '(' or
	// ')' for a parenthesis.
	Kind byte
	S    string
}

// Tokenize appends the items of one physical line, its CRLF stripped, to items. When the line
// ends with a literal announcement ("{n}" or "{n+}"), it returns the literal's length and
// isLit: the literal's data and the rest of the logical line follow on the wire, for the
// caller to read. On error, rest is where it stopped.
func Tokenize(b []byte, items *[]Item) (n int, rest []byte, isLit bool, err error) {
	for len(b) > 0 {
		switch c := b[0]; {
		case c == ' ':
			b = b[1:]
		case c == '(' || c == ')':
			*items = append(*items, Item{Kind: c})
			b = b[1:]
		case c == '"':
			var sb strings.Builder
			i := 1
			for ; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
					if i == len(b) || (b[i] != '"' && b[i] != '\\') {
						return 0, b, false, errors.New("bad escape in quoted string")
					}
				} else if b[i] == 0 {
					return 0, b, false, errors.New("NUL in quoted string")
				}
				sb.WriteByte(b[i])
			}
			if i == len(b) {
				return 0, b, false, errors.New("unterminated quoted string")
			}
			*items = append(*items, Item{Kind: 's', S: sb.String()})
			b = b[i+1:]
		case c == '{':
			end := bytes.IndexByte(b, '}')
			if end != len(b)-1 {
				return 0, b, false, errors.New("literal announcement not at the end of the line")
			}
			digits := bytes.TrimSuffix(b[1:end], []byte("+"))
			v, perr := strconv.ParseUint(string(digits), 10, 32)
			if perr != nil || len(digits) == 0 || len(digits) > 10 {
				return 0, b, false, errors.New("bad literal announcement")
			}
			return int(v), nil, true, nil
		case c < 0x20 || c == 0x7f:
			return 0, b, false, errors.New("control character")
		default:
			i := 0
			for i < len(b) && IsAtomChar(b[i]) {
				i++
			}
			if i == 0 {
				return 0, b, false, errors.New("unexpected character")
			}
			*items = append(*items, Item{Kind: 'a', S: string(b[:i])})
			b = b[i:]
		}
	}
	return 0, nil, false, nil
}

// IsAtomChar reports whether c is an ATOM-CHAR: any CHAR but the atom-specials "(", ")", "{",
// SP, CTL and the quoted-specials DQUOTE and backslash (RFC 5804 §4).
func IsAtomChar(c byte) bool {
	switch {
	case c <= ' ' || c >= 0x7f:
		return false
	case c == '(' || c == ')' || c == '{' || c == '"' || c == '\\':
		return false
	}
	return true
}
