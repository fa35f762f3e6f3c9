// Package lines follows a mail server's output as the relay.Framer of a spliced IMAP or
// ManageSieve session must: CRLF-ended lines, where a line ending in "{n}" (IMAP's literal,
// RFC 9051 §4.3; ManageSieve's literal-s2c, RFC 5804 §4) is followed by n octets of literal
// data and then the rest of the line. Literal data is skipped without being looked at. What a
// framer makes of a line (the end of a response, a BYE) is its own.
package lines

import (
	"bytes"
	"math"
)

// Tracker is where the output stands: inside a literal, inside a line, or at a line's start
// (the zero value). Every spliced session holds one in its framer, so it is kept to 40 bytes:
// a framer's few flags fit beside it in one 48-byte allocation.
type Tracker struct {
	literal int64    // literal octets still to come
	n       int32    // bytes of the current line seen so far, counted up to math.MaxInt32
	tail    [22]byte // the end of the current line: "{" 18 digits "}" CRLF, the longest literal announced, fits
	head    [6]byte  // the start of the current line: IMAP's "* BYE " fits
}

// maxDigits bounds the digits of a literal's length: 18 cannot overflow an int64.
const maxDigits = 18

// Open reports whether a line or a literal is open: false when everything fed so far ended
// at a line's end.
func (t *Tracker) Open() bool { return t.literal != 0 || t.n != 0 }

// Literal is how many octets of literal data are still to come.
func (t *Tracker) Literal() int64 { return t.literal }

// Next follows p up to and including the end of the next line that completes, and returns
// the rest of p. When a line completed (it did not announce a literal), ended is true and
// head is its first bytes, up to six (the bytes after a literal belong to the line too),
// valid until the next call; otherwise p is used up.
// bareLF: a literal may be announced by "{n}" and LF alone, as ManageSieve servers send.
func (t *Tracker) Next(p []byte, bareLF bool) (rest, head []byte, ended bool) {
	for len(p) > 0 {
		if t.literal > 0 {
			k := int(min(t.literal, int64(len(p))))
			t.literal -= int64(k)
			p = p[k:]
			continue // the line goes on after the literal; t.n stays non-zero
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.keep(p)
			return nil, nil, false
		}
		line := p[:i+1]
		p = p[i+1:]
		if t.n == 0 {
			// The whole line is in p, as most are: it is looked at where it is.
			if t.literal = literalAtEnd(line, bareLF); t.literal == 0 {
				return p, line[:min(len(line), len(t.head))], true
			}
			t.keep(line) // the line goes on after the literal
			continue
		}
		t.keep(line)
		if t.literal = literalAtEnd(t.tail[:min(int(t.n), len(t.tail))], bareLF); t.literal == 0 {
			head = t.head[:min(int(t.n), len(t.head))]
			t.n = 0
			return p, head, true
		}
	}
	return p, nil, false
}

// keep appends p to the line: its last len(tail) bytes to the tail, its first len(head) to
// the head.
func (t *Tracker) keep(p []byte) {
	if int(t.n) < len(t.head) {
		copy(t.head[t.n:], p)
	}
	have := min(int(t.n), len(t.tail))
	t.n = int32(min(int64(t.n)+int64(len(p)), math.MaxInt32))
	if len(p) >= len(t.tail) {
		copy(t.tail[:], p[len(p)-len(t.tail):])
		return
	}
	if have+len(p) > len(t.tail) {
		drop := have + len(p) - len(t.tail)
		copy(t.tail[:], t.tail[drop:have])
		have -= drop
	}
	copy(t.tail[have:], p)
}

// literalAtEnd returns n when line ends in "{n}" CRLF (or, bareLF, "{n}" LF) with n > 0,
// else 0.
func literalAtEnd(line []byte, bareLF bool) int64 {
	if !bytes.HasSuffix(line, []byte("}\r\n")) {
		if !bareLF || !bytes.HasSuffix(line, []byte("}\n")) {
			return 0
		}
		line = line[:len(line)-2]
	} else {
		line = line[:len(line)-3]
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 || open == len(line)-1 || len(line)-open-1 > maxDigits {
		return 0
	}
	var n int64
	for _, b := range line[open+1:] {
		if b < '0' || b > '9' {
			return 0
		}
		n = n*10 + int64(b-'0')
	}
	return n
}
