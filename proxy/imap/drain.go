package imap

import (
	"bytes"

	"github.com/saslgate/saslgate/proxy/relay"
)

// byeShutdown is the last line a session gets when a drain ends it (RFC 9051 §7.1.5).
const byeShutdown = "* BYE Server shutting down, please reconnect\r\n"

// byeLost is the last line of a session whose backend went away without a BYE of its own
// (DESIGN.md's error table; RFC 9051 §7.1.5: the server is closing the connection).
const byeLost = "* BYE Backend connection lost\r\n"

// responseBoundary is the relay.Framer of a spliced IMAP session. It follows the server's
// output (RFC 9051 §2.2.2, §4.3): CRLF-ended lines, where a line ending in "{n}" (or
// literal8's "~{n}") is followed by n octets of literal data and then the rest of the line.
// Literal data is skipped without being looked at. It notes an untagged BYE, which the
// server sends before it closes (LOGOUT, autologout, its own shutdown), so that a session
// whose backend closes without one gets byeLost. Every spliced session holds one: its fields
// are in the order that fits them in 48 bytes rather than 64.
type responseBoundary struct {
	literal int64    // literal octets still to come
	n       int      // bytes of the current line seen so far, up to len(tail) kept
	tail    [24]byte // the end of the current line: "{" 20 digits "}" CRLF fits
	head    [6]byte  // the start of the current line: "* BYE " fits
	bye     bool     // the server sent an untagged BYE
}

var _ relay.LossFramer = (*responseBoundary)(nil)

// Between reports whether everything fed so far ends a response: no line and no literal
// is open.
func (r *responseBoundary) Between() bool { return r.literal == 0 && r.n == 0 }

// Lost is byeLost, unless the server said BYE itself.
func (r *responseBoundary) Lost() string {
	if r.bye {
		return ""
	}
	return byeLost
}

// Feed follows p, the next bytes the server sent.
func (r *responseBoundary) Feed(p []byte) {
	for len(p) > 0 {
		if r.literal > 0 {
			k := int(min(r.literal, int64(len(p))))
			r.literal -= int64(k)
			p = p[k:]
			// The line goes on after the literal; r.n stays non-zero.
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.keep(p)
			return
		}
		r.keep(p[:i+1])
		p = p[i+1:]
		r.literal = literalAtEnd(r.tail[:min(r.n, len(r.tail))])
		if r.literal == 0 {
			// The line, and with it the response, is complete.
			r.bye = r.bye || isBye(r.head[:min(r.n, len(r.head))])
			r.n = 0
		}
	}
}

// keep appends p to the line's tail, keeping its last len(tail) bytes, and its first
// len(head) to the head.
func (r *responseBoundary) keep(p []byte) {
	if r.n < len(r.head) {
		copy(r.head[r.n:], p)
	}
	if len(p) >= len(r.tail) {
		copy(r.tail[:], p[len(p)-len(r.tail):])
		r.n += len(p)
		return
	}
	have := min(r.n, len(r.tail))
	if have+len(p) > len(r.tail) {
		drop := have + len(p) - len(r.tail)
		copy(r.tail[:], r.tail[drop:have])
		have -= drop
	}
	copy(r.tail[have:], p)
	r.n += len(p)
}

// literalAtEnd returns n when line ends in "{n}\r\n" with n > 0, else 0.
func literalAtEnd(line []byte) int64 {
	if !bytes.HasSuffix(line, []byte("}\r\n")) {
		return 0
	}
	line = line[:len(line)-3]
	open := bytes.LastIndexByte(line, '{')
	if open < 0 || open == len(line)-1 || len(line)-open-1 > 18 {
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

// isBye reports whether a line starting with head is an untagged BYE (RFC 9051 §7.1.5:
// "* BYE" SP resp-text; atoms are case-insensitive).
func isBye(head []byte) bool {
	return len(head) == 6 && bytes.EqualFold(head[:5], []byte("* BYE")) && (head[5] == ' ' || head[5] == '\r')
}
