package relay

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// spliceBufSize is what one read takes from a side: four of TLS's largest records. Toward
// a client, crypto/tls makes four records of it, which a coalescer under the TLS layer sends
// in one write(2) (Coalesce); from a client, the records crypto/tls holds go to the backend
// in one write. With 16 KiB, the size of one record, the splice made a read and a write per
// record: 64 KiB took the gateway's CPU per GB relayed from 1.3 to 1.1 s, and to 0.85 s with
// the coalescer; 128 KiB saved nothing more (issue #20, bench/README.md). An idle direction
// holds none (spliceBufs).
const spliceBufSize = 64 << 10

// spliceBufs holds the splice's read buffers. A direction takes one only
// while it has bytes to move: a logged-in session spends most of its life
// idle (IMAP IDLE), and a buffer held by each waiting direction was half of
// what an idle session cost (issue #8, bench/README.md).
var spliceBufs = sync.Pool{New: func() any {
	b := make([]byte, spliceBufSize)
	return &b
}}

// spliceBufsCount, when the tests set it, counts the buffers taken from
// spliceBufs and those not yet put back: what an idle direction holds. Nil
// otherwise, so that reads share no counter across cores.
var spliceBufsCount *bufCount

type bufCount struct{ taken, out atomic.Int64 }

func getSpliceBuf() *[]byte {
	if c := spliceBufsCount; c != nil {
		c.taken.Add(1)
		c.out.Add(1)
	}
	return spliceBufs.Get().(*[]byte)
}

func putSpliceBuf(bp *[]byte) {
	if c := spliceBufsCount; c != nil {
		c.out.Add(-1)
	}
	spliceBufs.Put(bp)
}

// halfCloseGrace is how long the second direction may run after the first
// ended (a client's LOGOUT answer, a backend's last BYE) before both close.
const halfCloseGrace = 5 * time.Second

// parkAfter is how long a direction waits for data on a goroutine of its own
// before it parks: its goroutine ends, and the socket's readiness is watched
// by the one shared poller (park_linux.go), which starts the direction again
// when data comes. Most logged-in IMAP sessions sit in IDLE for minutes; a
// parked direction costs no stack (issue #8, bench/README.md). A variable for
// tests.
var parkAfter = 5 * time.Second

// Session is a logged-in session being relayed: client bytes to the backend
// (up) and backend bytes to the client (down), each direction a half that runs
// on a goroutine while it has data and is parked while it has none.
type Session struct {
	client, backend net.Conn
	up, down        *half
	downstream      *downstream          // the client as down writes it; nil without a Framer
	ended           func(up, down int64) // called once, after both connections closed
	parkAfter       time.Duration

	mu      sync.Mutex
	running int         // halves not done
	closed  bool        // both connections are (being) closed: nothing parks any more
	grace   *time.Timer // closes both halfCloseGrace after the first half is done
}

// Start starts relaying a logged-in session and returns at once: client bytes
// (starting with those already in cbr, pipelined behind the login) to the
// backend, backend bytes (starting with bbr's) to the client, until either
// side closes; then both connections close and ended runs with the bytes
// relayed each way. framer follows the bytes written to the client (End, and
// LossFramer); nil if the protocol needs neither. cbr and bbr must not be used
// after, and neither connection may have a read deadline.
func Start(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader, framer Framer, ended func(up, down int64)) *Session {
	s := &Session{client: client, backend: backend, ended: ended, running: 2, parkAfter: parkAfter}
	toClient := client
	if framer != nil {
		s.downstream = &downstream{Conn: client, framer: framer, co: coalescerOf(client)}
		toClient = s.downstream
	}
	s.up = newHalf(s, backend, client, pending(cbr))
	s.down = newHalf(s, toClient, backend, pending(bbr))
	go s.up.run()
	go s.down.run()
	return s
}

// Abort closes both connections, ending the session; parked halves are taken
// back from the poller first (while their descriptors are still open, so no
// other socket's registration can be touched) and run to their end.
func (s *Session) Abort() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	var wake []*half
	for _, h := range []*half{s.up, s.down} {
		if h.unpark() {
			wake = append(wake, h)
		}
	}
	s.mu.Unlock()
	s.client.Close()
	s.backend.Close()
	for _, h := range wake {
		go h.run()
	}
}

// endWait bounds how long End waits for a response in flight to finish, so
// that its goodbye lands between responses, and for the goodbye itself to be
// written.
const endWait = 2 * time.Second

// End ends the session for a drain: goodbye, the protocol's last line with
// its CRLF, is written to the client at the next response boundary the Framer
// sees (at once if the stream is at one), then both connections close as with
// Abort. It returns within about endWait, which also bounds a write blocked on
// a slow client; without a Framer it closes at once.
func (s *Session) End(goodbye string) {
	if d := s.downstream; d != nil {
		t := time.NewTimer(endWait)
		select {
		case <-d.end(goodbye):
		case <-t.C:
		}
		t.Stop()
	}
	s.Abort()
}

// park hands h to the poller unless the session is closing; h's goroutine
// must end when it returns true.
func (s *Session) park(h *half) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && h.park()
}

// clientRunning reports whether the client's direction goes on: it has not
// ended, and the session is not closing.
func (s *Session) clientRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.running == 2
}

// halfEnded counts a half out, and reports whether it was the last. A half calls it before
// passing its EOF on, so that the other half, woken by that EOF, finds it counted out
// (clientRunning).
func (s *Session) halfEnded() (last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	return s.running == 0
}

// halfDone follows halfEnded once the half has passed its EOF on: the first half starts the
// grace period, the last ends the session.
func (s *Session) halfDone(last bool) {
	s.mu.Lock()
	if !last {
		if s.running > 0 { // else the last half has already ended the session
			s.grace = time.AfterFunc(halfCloseGrace, s.Abort)
		}
		s.mu.Unlock()
		return
	}
	if s.grace != nil {
		s.grace.Stop()
	}
	s.mu.Unlock()
	s.Abort()
	s.ended(s.up.n, s.down.n)
}

// pending returns the bytes br holds but nobody read yet; br is not used after.
func pending(br *bufio.Reader) []byte {
	if br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return b
}

// half copies src to dst: first the bytes already read from src (first), then
// what src sends, then it half-closes dst so its reader sees EOF. It holds a
// pooled buffer only from a read that has data to the write that passes it on.
type half struct {
	s        *Session
	dst, src net.Conn
	first    []byte
	r        waitReader
	n        int64           // bytes written to dst
	co       *coalescer      // collects dst's records of one write; nil when dst is not a TLS connection over one
	watch    syscall.RawConn // src's socket, for the poller; nil: never parks
	parked   parking         // the poller's state for this half (park_linux.go)
}

func newHalf(s *Session, dst, src net.Conn, first []byte) *half {
	h := &half{s: s, dst: dst, src: src, first: first, r: newWaitReader(src), co: coalescerOf(dst)}
	if canPark {
		h.watch = socketOf(src)
	}
	return h
}

// run copies until src or dst fails, or parks h when src has been quiet for
// parkAfter; the poller runs it again on data.
func (h *half) run() {
	if len(h.first) > 0 {
		w, err := writeCoalesced(h.dst, h.co, h.first)
		h.n += int64(w)
		h.first = nil
		if err != nil {
			h.done(false)
			return
		}
	}
	for {
		var deadline time.Time
		if h.watch != nil {
			deadline = time.Now().Add(h.s.parkAfter)
		}
		bp, m, err := h.r.read(deadline)
		if m > 0 {
			w, werr := writeCoalesced(h.dst, h.co, (*bp)[:m])
			h.n += int64(w)
			if werr != nil {
				putSpliceBuf(bp)
				h.done(false)
				return
			}
		}
		if bp != nil {
			putSpliceBuf(bp)
		}
		if err == nil {
			continue
		}
		if m == 0 && h.watch != nil && isTimeout(err) {
			if h.s.park(h) {
				return
			}
			continue // closing: the next read fails
		}
		break
	}
	h.done(true)
}

// done ends h; srcEnded when src ended (EOF, or a read error), not dst.
func (h *half) done(srcEnded bool) {
	// The backend's side ended while the client's goes on: the backend dropped
	// the session, and the client may be told so (LossFramer).
	if d, ok := h.dst.(*downstream); ok && srcEnded && h.s.clientRunning() {
		d.lost()
	}
	last := h.s.halfEnded()
	closeWrite(h.dst)
	h.s.halfDone(last)
}

// A Passthrough connection wraps another without buffering: its reads and writes are the
// wrapped connection's (a PROXY-protocol listener's connection, which changes only the
// addresses it reports). The splice waits on, and parks, the socket under it; a wrapper that
// holds bytes of its own must not be one, or parking would strand them.
type Passthrough interface {
	net.Conn
	Wrapped() net.Conn
}

// socketOf returns the RawConn of the socket under c (a TLS connection's
// transport, a downstream's connection, a Passthrough's), or nil.
func socketOf(c net.Conn) syscall.RawConn {
	for {
		switch t := c.(type) {
		case *downstream:
			c = t.Conn
			continue
		case *tls.Conn:
			c = t.NetConn()
			continue
		case *coalescer:
			c = t.Conn
			continue
		case *net.TCPConn:
			rc, err := t.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case Passthrough:
			c = t.Wrapped()
			continue
		}
		return nil
	}
}

// A waitReader reads its connection into a buffer from spliceBufs, which it
// returns (or nil) with the count read; the caller puts it back. A non-zero
// deadline bounds the wait for the first byte (the read then fails with a
// timeout and nothing read); once bytes came, it returns what is there.
type waitReader interface {
	read(deadline time.Time) (bp *[]byte, n int, err error)
}

func newWaitReader(c net.Conn) waitReader {
	if d, ok := c.(*downstream); ok {
		c = d.Conn // reads pass through; only writes are followed
	}
	switch c := c.(type) {
	case *tls.Conn:
		return &tlsReader{c: c}
	case *coalescer: // a plaintext client over one: reads pass through
		return newWaitReader(c.Conn)
	case *net.TCPConn:
		if r := newFDReader(c, c); r != nil {
			return r
		}
	case *net.UnixConn:
		if r := newFDReader(c, c); r != nil {
			return r
		}
	case Passthrough:
		return newWaitReader(c.Wrapped())
	}
	// Anything else (net.Pipe in tests) may have its own buffering, so only its
	// own Read is safe; it holds a buffer while it waits, as io.Copy would.
	return blockingReader{c}
}

// tlsReader waits for a client (or a TLS backend) in a one-byte Read, which
// leaves the rest of the record inside crypto/tls. It cannot wait for the
// socket to become readable instead: records crypto/tls has buffered (a
// command pipelined behind AUTHENTICATE, the second of two records that came
// in one segment) never show as readiness. Once a byte is in, it takes a
// buffer and collects what crypto/tls holds or can decrypt without waiting
// for the network, a read deadline in the past serving as a non-blocking
// probe. crypto/tls treats the timeout as temporary and keeps any partial
// record for the next Read. The wait for the first byte has the caller's
// deadline, so a timeout there means crypto/tls holds no complete record: the
// socket's readiness then says when there is more (what parking relies on).
type tlsReader struct {
	c   *tls.Conn
	one [1]byte
}

// aLongTimeAgo is a deadline that has passed (net/http's name for it).
var aLongTimeAgo = time.Unix(1, 0)

func (r *tlsReader) read(deadline time.Time) (*[]byte, int, error) {
	r.c.SetReadDeadline(deadline)
	n, err := r.c.Read(r.one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, 0, err
	}
	bp := getSpliceBuf()
	b := *bp
	b[0] = r.one[0]
	if err != nil {
		return bp, 1, err
	}
	m := 1
	r.c.SetReadDeadline(aLongTimeAgo)
	for m < len(b) {
		k, perr := r.c.Read(b[m:])
		m += k
		if perr != nil {
			if !isTimeout(perr) {
				err = perr
			}
			break
		}
	}
	r.c.SetReadDeadline(time.Time{})
	return bp, m, err
}

// blockingReader reads a connection of a type the splice does not know.
type blockingReader struct{ c net.Conn }

func (r blockingReader) read(time.Time) (*[]byte, int, error) {
	bp := getSpliceBuf()
	n, err := r.c.Read(*bp)
	return bp, n, err
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// isTimeout reports a passed deadline: each tlsReader.read that drains crypto/tls ends with
// one, so it must not allocate (errors.As with a net.Error target does).
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
