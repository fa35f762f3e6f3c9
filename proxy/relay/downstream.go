package relay

import (
	"io"
	"net"
	"sync"
	"time"
)

// A Framer follows a server's responses as the relay writes them to the client, so that a
// line of the relay's own can go between two responses rather than inside one. Its methods
// are called one at a time.
type Framer interface {
	// Feed follows p, the next bytes written to the client.
	Feed(p []byte)
	// Between reports whether the bytes fed so far end a response: none is open.
	Between() bool
}

// A LossFramer is a Framer with a line for a client whose backend is lost: the backend's side
// ended (EOF or a read error) while the client's went on and the stream is at a response
// boundary. Without one, the client just sees the connection close.
type LossFramer interface {
	Framer
	// Lost returns the line, CRLF included, or "" when the client needs none (the server
	// said goodbye itself).
	Lost() string
}

// downstream is the client connection of a session with a Framer, as the backend-to-client
// direction writes it: it feeds the framer, so that End can add a goodbye, and lost a line
// for a lost backend, at a response boundary. Reads pass through.
type downstream struct {
	net.Conn

	mu     sync.Mutex
	framer Framer
	co     *coalescer    // collects the records of one write; nil without one under the TLS layer
	bye    string        // to be written at the next boundary, once end is called
	ended  chan struct{} // closed when the goodbye is written, or cannot be
	done   bool          // nothing more is written
}

// Write writes p to the client and, when end is waiting and p ends a response, the goodbye.
func (d *downstream) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return 0, net.ErrClosed
	}
	n, err := writeCoalesced(d.Conn, d.co, p)
	d.framer.Feed(p[:n])
	if err != nil {
		d.finish()
		return n, err
	}
	if d.bye != "" && d.framer.Between() {
		d.writeLast(d.bye)
	}
	return n, nil
}

// CloseWrite half-closes the client connection, as the splice does when the backend is done.
func (d *downstream) CloseWrite() error {
	if cw, ok := d.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return d.Conn.Close()
}

// end asks for goodbye at the next response boundary (at once, if the stream is at one), and
// returns a channel closed once it is written or cannot be. A write blocked on a slow client
// is cut short by endWait.
func (d *downstream) end(goodbye string) <-chan struct{} {
	_ = d.Conn.SetWriteDeadline(time.Now().Add(endWait))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended == nil {
		d.ended = make(chan struct{})
		if d.done {
			close(d.ended)
		} else {
			d.bye = goodbye
			if d.framer.Between() {
				d.writeLast(d.bye)
			}
		}
	}
	return d.ended
}

// lost writes the framer's line for a lost backend, if it has one and the stream is at a
// response boundary; nothing is written after. A client that does not read cannot hold it
// for longer than endWait.
func (d *downstream) lost() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	if lf, ok := d.framer.(LossFramer); ok && lf.Between() {
		if line := lf.Lost(); line != "" {
			_ = d.Conn.SetWriteDeadline(time.Now().Add(endWait))
			d.writeLast(line)
			return
		}
	}
	d.finish()
}

// writeLast writes the session's last line to the client.
func (d *downstream) writeLast(line string) {
	_, _ = io.WriteString(d.Conn, line)
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
