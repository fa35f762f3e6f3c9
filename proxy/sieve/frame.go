package sieve

import (
	"bytes"
	"time"

	"github.com/saslgate/saslgate/proxy/internal/lines"
	"github.com/saslgate/saslgate/proxy/relay"
)

// responseBoundary is the relay.Framer of a spliced ManageSieve session. It follows the
// server's output (RFC 5804 §4) with a lines.Tracker, a literal's "{n}" ended by CRLF or a
// bare LF. A response is complete with its OK, NO or BYE line (response-oknobye); the lines
// before it (a LISTSCRIPTS listing, a GETSCRIPT script, capabilities) are inside it. It notes
// a BYE, which the server sends before it closes on its own (an idle timeout, a shutdown), and
// an OK just before the close, which is how the server ends after LOGOUT (RFC 5804 §2.3), so
// that only a session whose backend closes without either gets byeLost.
type responseBoundary struct {
	lines  lines.Tracker
	inside bool // a complete line that does not end a response has been seen
	bye    bool // the server sent a BYE
	// okAt is when the last line, complete, was an OK; zero once anything else came.
	okAt time.Time
}

// logoutGrace is how soon after an OK a backend's close counts as the end of a LOGOUT.
const logoutGrace = 2 * time.Second

var _ relay.LossFramer = (*responseBoundary)(nil)

// Between reports whether everything fed so far ends a response: no line, no literal and no
// multi-line response is open.
func (r *responseBoundary) Between() bool { return !r.lines.Open() && !r.inside }

// Lost is byeLost, unless the server said BYE itself or has just answered OK (to LOGOUT).
func (r *responseBoundary) Lost() string {
	if r.bye || !r.okAt.IsZero() && !r.lines.Open() && time.Since(r.okAt) < logoutGrace {
		return ""
	}
	return byeLost
}

// Feed follows p, the next bytes the server sent.
func (r *responseBoundary) Feed(p []byte) {
	for len(p) > 0 {
		var head []byte
		var ended bool
		if p, head, ended = r.lines.Next(p, true); !ended {
			return // p is used up
		}
		// The line is complete; it completes the response when it is OK, NO or BYE.
		done := isStatus(head)
		r.inside = !done
		r.bye = r.bye || done && len(head) >= 3 && bytes.EqualFold(head[:3], []byte("BYE"))
		r.okAt = time.Time{}
		if done && bytes.EqualFold(head[:2], []byte("OK")) {
			r.okAt = time.Now()
		}
	}
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
