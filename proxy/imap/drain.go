package imap

import (
	"bytes"

	"github.com/saslgate/saslgate/proxy/internal/lines"
	"github.com/saslgate/saslgate/proxy/relay"
)

// byeShutdown is the last line a session gets when a drain ends it (RFC 9051 §7.1.5).
const byeShutdown = "* BYE Server shutting down, please reconnect\r\n"

// byeLost is the last line of a session whose backend went away without a BYE of its own
// (DESIGN.md's error table; RFC 9051 §7.1.5: the server is closing the connection).
const byeLost = "* BYE Backend connection lost\r\n"

// responseBoundary is the relay.Framer of a spliced IMAP session. It follows the server's
// output (RFC 9051 §2.2.2, §4.3) with a lines.Tracker, literal8's "~{n}" included (the "~"
// is before the brace), and notes an untagged BYE, which the server sends before it closes
// (LOGOUT, autologout, its own shutdown), so that a session whose backend closes without one
// gets byeLost. Every spliced session holds one, in 48 bytes.
type responseBoundary struct {
	lines lines.Tracker
	bye   bool // the server sent an untagged BYE
}

var _ relay.LossFramer = (*responseBoundary)(nil)

// Between reports whether everything fed so far ends a response: no line and no literal
// is open.
func (r *responseBoundary) Between() bool { return !r.lines.Open() }

// Lost is byeLost, unless the server said BYE itself.
func (r *responseBoundary) Lost() string {
	if r.bye {
		return ""
	}
	return byeLost
}

// Feed follows p, the next bytes the server sent. Every complete line completes a response.
func (r *responseBoundary) Feed(p []byte) {
	for len(p) > 0 {
		var head []byte
		var ended bool
		if p, head, ended = r.lines.Next(p, false); ended {
			r.bye = r.bye || isBye(head)
		}
	}
}

// isBye reports whether a line starting with head is an untagged BYE (RFC 9051 §7.1.5:
// "* BYE" SP resp-text; atoms are case-insensitive).
func isBye(head []byte) bool {
	return len(head) == 6 && bytes.EqualFold(head[:5], []byte("* BYE")) && (head[5] == ' ' || head[5] == '\r')
}
