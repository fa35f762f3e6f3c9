package imap

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// spliceBufSize matches TLS's largest record, so one read fills at most one buffer.
const spliceBufSize = 16 << 10

// spliceBufs holds the splice's read buffers. A direction takes one only
// while it has bytes to move: a logged-in session spends most of its life in
// IDLE, and a buffer held by each waiting direction was half of what an idle
// session cost (issue #8, bench/README.md).
var spliceBufs = sync.Pool{New: func() any {
	spliceBufsMade.Add(1)
	b := make([]byte, spliceBufSize)
	return &b
}}

// spliceBufsMade counts the buffers spliceBufs had to make (tests).
var spliceBufsMade atomic.Int64

// halfCloseGrace is how long the second direction may run after the first
// ended (a client's LOGOUT answer, a backend's last BYE) before both close.
const halfCloseGrace = 5 * time.Second

// splice relays a logged-in session until either side closes: client bytes
// (starting with those already in cbr, pipelined behind AUTHENTICATE) to the
// backend, backend bytes (starting with bbr's) to the client. It expects no
// read deadline on either connection.
func splice(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader) (up, down int64) {
	done := make(chan struct{})
	// cbr's bytes go in as an argument: a closure capturing cbr would keep its
	// 4 KiB buffer alive for the session's life.
	go func(first []byte) {
		up = copyHalf(backend, client, first)
		close(done)
	}(pending(cbr))
	down = copyHalf(client, backend, pending(bbr))
	t := time.AfterFunc(halfCloseGrace, func() { client.Close(); backend.Close() })
	<-done
	t.Stop()
	client.Close()
	backend.Close()
	return up, down
}

// pending returns the bytes br holds but nobody read yet; br is not used after.
func pending(br *bufio.Reader) []byte {
	if br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return b
}

// copyHalf copies src to dst, first the bytes already read from it (first),
// then half-closes dst so its reader sees EOF. It holds a pooled buffer only
// from a read that has data to the write that passes it on.
func copyHalf(dst, src net.Conn, first []byte) int64 {
	var n int64
	if len(first) > 0 {
		w, err := dst.Write(first)
		n += int64(w)
		if err != nil {
			closeWrite(dst)
			return n
		}
	}
	r := newWaitReader(src)
	for {
		bp, m, err := r.read()
		if m > 0 {
			w, werr := dst.Write((*bp)[:m])
			n += int64(w)
			if werr != nil {
				err = werr
			}
		}
		if bp != nil {
			spliceBufs.Put(bp)
		}
		if err != nil {
			break
		}
	}
	closeWrite(dst)
	return n
}

// A waitReader reads its connection into a buffer from spliceBufs, which it
// returns (or nil) with the count read; the caller puts it back.
type waitReader interface {
	read() (bp *[]byte, n int, err error)
}

func newWaitReader(c net.Conn) waitReader {
	if d, ok := c.(*downstream); ok {
		c = d.Conn // reads pass through; only writes are followed
	}
	switch c := c.(type) {
	case *tls.Conn:
		return &tlsReader{c: c}
	case *net.TCPConn:
		if r := newFDReader(c); r != nil {
			return r
		}
	case *net.UnixConn:
		if r := newFDReader(c); r != nil {
			return r
		}
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
// record for the next Read; splice runs without deadlines, so none is
// restored after.
type tlsReader struct {
	c   *tls.Conn
	one [1]byte
}

// aLongTimeAgo is a deadline that has passed (net/http's name for it).
var aLongTimeAgo = time.Unix(1, 0)

func (r *tlsReader) read() (*[]byte, int, error) {
	n, err := r.c.Read(r.one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, 0, err
	}
	bp := spliceBufs.Get().(*[]byte)
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

// blockingReader reads a connection of a type splice does not know.
type blockingReader struct{ c net.Conn }

func (r blockingReader) read() (*[]byte, int, error) {
	bp := spliceBufs.Get().(*[]byte)
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
