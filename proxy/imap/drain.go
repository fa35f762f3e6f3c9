package imap

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// byeShutdown is the last line a session gets when a drain ends it (RFC 9051 §7.1.5).
const byeShutdown = "* BYE Server shutting down, please reconnect\r\n"

// endWait bounds how long End waits for a response in flight to finish, so that its BYE
// lands between responses, and for the BYE itself to be written.
const endWait = 2 * time.Second

// downstream is the client connection of a spliced session, as the backend-to-client
// direction writes it: it follows the server's responses (lines, and literals announced by
// "{n}" at a line's end), so that shutdown can add a BYE between two responses rather than
// inside one. Reads pass through.
type downstream struct {
	net.Conn

	mu    sync.Mutex
	resp  responseBoundary
	bye   string        // to be written at the next boundary, once end is called
	ended chan struct{} // closed when the BYE is written, or cannot be
	done  bool          // nothing more is written
}

// Write writes p to the client and, when end is waiting and p ends a response, the BYE.
func (d *downstream) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return 0, net.ErrClosed
	}
	n, err := d.Conn.Write(p)
	d.resp.feed(p[:n])
	if err != nil {
		d.finish()
		return n, err
	}
	if d.bye != "" && d.resp.between() {
		d.writeBye()
	}
	return n, nil
}

// CloseWrite half-closes the client connection, as splice does when the backend is done.
func (d *downstream) CloseWrite() error {
	if cw, ok := d.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return d.Conn.Close()
}

// end asks for a BYE at the next response boundary (at once, if the stream is at one), and
// returns a channel closed once it is written or cannot be. A write blocked on a slow client
// is cut short by endWait.
func (d *downstream) end() <-chan struct{} {
	_ = d.Conn.SetWriteDeadline(time.Now().Add(endWait))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended == nil {
		d.ended = make(chan struct{})
		if d.done {
			close(d.ended)
		} else {
			d.bye = byeShutdown
			if d.resp.between() {
				d.writeBye()
			}
		}
	}
	return d.ended
}

func (d *downstream) writeBye() {
	_, _ = d.Conn.Write([]byte(d.bye))
	d.finish()
}

func (d *downstream) finish() {
	d.done = true
	if d.ended != nil {
		select {
		case <-d.ended:
		default:
			close(d.ended)
		}
	}
}

// responseBoundary follows an IMAP server's output (RFC 9051 §2.2.2, §4.3): CRLF-ended lines,
// where a line ending in "{n}" (or literal8's "~{n}") is followed by n octets of literal data
// and then the rest of the line. Literal data is skipped without being looked at.
type responseBoundary struct {
	literal int64    // literal octets still to come
	tail    [24]byte // the end of the current line: "{" 20 digits "}" CRLF fits
	n       int      // bytes of the current line seen so far, up to len(tail) kept
}

// between reports whether everything fed so far ends a response: no line and no literal
// is open.
func (r *responseBoundary) between() bool { return r.literal == 0 && r.n == 0 }

func (r *responseBoundary) feed(p []byte) {
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
			r.n = 0 // the line, and with it the response, is complete
		}
	}
}

// keep appends p to the line's tail, keeping its last len(tail) bytes.
func (r *responseBoundary) keep(p []byte) {
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
