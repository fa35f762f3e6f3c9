package sieve

import (
	"bytes"
	"time"

	"github.com/saslgate/saslgate/proxy/relay"
)

// responseBoundary is the relay.Framer of a spliced ManageSieve session. It follows the
// server's output (RFC 5804 §4): CRLF-ended lines, where a line ending in "{n}" (literal-s2c)
// is followed by n octets of literal data and then the rest of the line. A response is
// complete with its OK, NO or BYE line (response-oknobye); the lines before it (a
// LISTSCRIPTS listing, a GETSCRIPT script, capabilities) are inside it. Literal data is
// skipped without being looked at. It notes a BYE, which the server sends before it closes
// on its own (an idle timeout, a shutdown), and an OK just before the close, which is how the
// server ends after LOGOUT (RFC 5804 §2.3), so that only a session whose backend closes
// without either gets byeLost.
type responseBoundary struct {
	literal int64    // literal octets still to come
	tail    [24]byte // the end of the current line: "{" 20 digits "}" CRLF fits
	head    [4]byte  // the start of the current line: "BYE " fits
	n       int      // bytes of the current line seen so far, up to len(tail) kept
	inside  bool     // a complete line that does not end a response has been seen
	bye     bool     // the server sent a BYE
	// okAt is when the last line, complete, was an OK; zero once anything else came.
	okAt time.Time
}

// logoutGrace is how soon after an OK a backend's close counts as the end of a LOGOUT.
const logoutGrace = 2 * time.Second

var _ relay.LossFramer = (*responseBoundary)(nil)

// Between reports whether everything fed so far ends a response: no line, no literal and no
// multi-line response is open.
func (r *responseBoundary) Between() bool { return r.literal == 0 && r.n == 0 && !r.inside }

// Lost is byeLost, unless the server said BYE itself or has just answered OK (to LOGOUT).
func (r *responseBoundary) Lost() string {
	if r.bye || !r.okAt.IsZero() && r.n == 0 && time.Since(r.okAt) < logoutGrace {
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
			// The line is complete; it completes the response when it is OK, NO or BYE.
			head := r.head[:min(r.n, len(r.head))]
			done := isStatus(head)
			r.inside = !done
			r.bye = r.bye || done && len(head) >= 3 && bytes.EqualFold(head[:3], []byte("BYE"))
			r.okAt = time.Time{}
			if done && bytes.EqualFold(head[:2], []byte("OK")) {
				r.okAt = time.Now()
			}
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

// literalAtEnd returns n when line ends in "{n}\r\n" (or "{n}\n") with n > 0, else 0.
func literalAtEnd(line []byte) int64 {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0
	}
	line = line[:len(line)-1]
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

// isStatus reports whether a line starting with head is OK, NO or BYE (RFC 5804 §4
// response-oknobye; atoms are case-insensitive), followed by SP or the line's end.
func isStatus(head []byte) bool {
	for _, kw := range []string{"OK", "NO", "BYE"} {
		if len(head) > len(kw) && bytes.EqualFold(head[:len(kw)], []byte(kw)) {
			switch head[len(kw)] {
			case ' ', '\r', '\n':
				return true
			}
		}
	}
	return false
}
