package bench

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// This file holds splice implementations with the signature of proxy/imap's
// unexported splice, so they can be measured side by side in one binary
// (splice_test.go):
//
//   - spliceHolding: proxy/imap/splice.go before issue #8, verbatim:
//     each waiting direction holds a pooled 16 KiB buffer.
//   - spliceNoHold:  what proxy/imap runs since issue #8 — a direction waiting
//     for data holds no pooled buffer, and the pre-authentication
//     bufio.Reader is not kept alive by the goroutine's closure.
//   - spliceParked:  a prototype (splice_parked_test.go), not in proxy/imap —
//     additionally, a direction idle for parkAfter gives up its goroutine and
//     waits in a shared epoll set.
//   - spliceRelay:   proxy/relay, what grew from it (splice_test.go).

// ---- holding (proxy/imap/splice.go before issue #8) ----

const spliceBufSize = 16 << 10

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, spliceBufSize); return &b }}

const halfCloseGrace = 5 * time.Second

func spliceHolding(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader) (up, down int64) {
	done := make(chan struct{})
	go func() {
		up = copyHalf(backend, client, pending(cbr))
		close(done)
	}()
	down = copyHalf(client, backend, pending(bbr))
	t := time.AfterFunc(halfCloseGrace, func() { client.Close(); backend.Close() })
	<-done
	t.Stop()
	client.Close()
	backend.Close()
	return up, down
}

func pending(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

func copyHalf(dst, src net.Conn, first []byte) int64 {
	var n int64
	if len(first) > 0 {
		w, err := dst.Write(first)
		n += int64(w)
		first = nil
		if err != nil {
			closeWrite(dst)
			return n
		}
	}
	bp := spliceBufs.Get().(*[]byte)
	w, _ := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	spliceBufs.Put(bp)
	closeWrite(dst)
	return n + w
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// ---- nohold: no buffer held while waiting (as proxy/imap now) ----

// spliceNoHold differs from spliceHolding in two places: the client
// direction's first bytes are passed as an argument (a capture of cbr kept the
// 4 KiB pre-auth reader alive for the whole session), and copyNoHold takes a
// pooled buffer only once data is there.
func spliceNoHold(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader) (up, down int64) {
	return spliceNoHoldPool(client, cbr, backend, bbr, &spliceBufs)
}

var spliceBufs64 = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// spliceNoHold64 is spliceNoHold with 64 KiB buffers (affordable once idle
// sessions hold none): a plaintext backend read then carries up to four
// TLS records' worth.
func spliceNoHold64(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader) (up, down int64) {
	return spliceNoHoldPool(client, cbr, backend, bbr, &spliceBufs64)
}

func spliceNoHoldPool(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader, pool *sync.Pool) (up, down int64) {
	done := make(chan struct{})
	go func(first []byte) {
		up = copyNoHold(backend, client, first, pool)
		close(done)
	}(pending(cbr))
	down = copyNoHold(client, backend, pending(bbr), pool)
	t := time.AfterFunc(halfCloseGrace, func() { client.Close(); backend.Close() })
	<-done
	t.Stop()
	client.Close()
	backend.Close()
	return up, down
}

func copyNoHold(dst, src net.Conn, first []byte, pool *sync.Pool) int64 {
	var n int64
	if len(first) > 0 {
		w, err := dst.Write(first)
		n += int64(w)
		first = nil
		if err != nil {
			closeWrite(dst)
			return n
		}
	}
	r := newWaitReader(src)
	for {
		bp, m, err := r.read(pool)
		if m > 0 {
			w, werr := dst.Write((*bp)[:m])
			n += int64(w)
			pool.Put(bp)
			if werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	closeWrite(dst)
	return n
}

// waitReader reads into a pooled buffer that it takes only once data is
// there; m > 0 means *bp holds m bytes and belongs to the caller.
type waitReader interface {
	read(pool *sync.Pool) (bp *[]byte, m int, err error)
}

func newWaitReader(c net.Conn) waitReader {
	if sc, ok := c.(syscall.Conn); ok { // *net.TCPConn: the plaintext backend
		if rc, err := sc.SyscallConn(); err == nil {
			return newRawReader(rc)
		}
	}
	return &streamReader{c: c} // *tls.Conn: the client (or a TLS backend)
}

// rawReader reads a socket through its RawConn: the read(2) either returns
// data into a just-taken buffer, or EAGAIN, and then the buffer goes back to
// the pool before the goroutine parks in the netpoller. Same syscalls as
// net.Conn.Read; deadlines still apply. Its state lives in the struct and
// tryRead is bound once, so a read allocates nothing.
type rawReader struct {
	rc   syscall.RawConn
	try  func(fd uintptr) bool
	pool *sync.Pool
	bp   *[]byte
	n    int
	err  error
}

func newRawReader(rc syscall.RawConn) *rawReader {
	r := &rawReader{rc: rc}
	r.try = r.tryRead
	return r
}

func (r *rawReader) tryRead(fd uintptr) bool {
	if r.bp == nil {
		r.bp = r.pool.Get().(*[]byte)
	}
	for {
		r.n, r.err = syscall.Read(int(fd), *r.bp)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		r.pool.Put(r.bp)
		r.bp = nil
		return false
	}
	return true
}

func (r *rawReader) read(pool *sync.Pool) (*[]byte, int, error) {
	r.pool = pool
	err := r.rc.Read(r.try)
	bp, n := r.bp, r.n
	r.bp = nil
	switch {
	case err == nil && r.err == nil && n > 0:
		return bp, n, nil
	case err == nil && r.err == nil:
		err = io.EOF
	case err == nil:
		err = os.NewSyscallError("read", r.err)
	}
	if bp != nil {
		pool.Put(bp)
	}
	return nil, 0, err
}

// streamReader serves a TLS connection, whose buffered records the socket's
// readiness does not show: it blocks on a one-byte read (TLS keeps the rest of
// the record), then takes a buffer and collects what the TLS layer holds or can
// decrypt without waiting, using a deadline in the past as a non-blocking
// probe. crypto/tls treats read timeouts as temporary, so the probe leaves the
// connection intact.
type streamReader struct {
	c net.Conn
	// deadline is restored after each probe (zero: none). A server with an
	// IDLE read deadline would keep its value here.
	deadline time.Time
}

var aLongTimeAgo = time.Unix(1, 0)

func (r *streamReader) read(pool *sync.Pool) (*[]byte, int, error) {
	var one [1]byte
	n, err := r.c.Read(one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, 0, err
	}
	bp := pool.Get().(*[]byte)
	b := *bp
	b[0] = one[0]
	m := 1
	if err != nil {
		return bp, m, err
	}
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
	r.c.SetReadDeadline(r.deadline)
	return bp, m, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
