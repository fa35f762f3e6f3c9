package imap

import (
	"bufio"
	"io"
	"net"
	"sync"
	"time"
)

// spliceBufSize matches TLS's largest record, so one read fills at most one buffer.
const spliceBufSize = 16 << 10

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, spliceBufSize); return &b }}

// halfCloseGrace is how long the second direction may run after the first
// ended (a client's LOGOUT answer, a backend's last BYE) before both close.
const halfCloseGrace = 5 * time.Second

// splice relays a logged-in session until either side closes: client bytes
// (starting with those already in cbr, pipelined behind AUTHENTICATE) to the
// backend, backend bytes (starting with bbr's) to the client.
func splice(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader) (up, down int64) {
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

// pending returns the bytes br holds but nobody read yet; br is not used after.
func pending(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// copyHalf copies src to dst, first the bytes already read from it (first),
// then half-closes dst so its reader sees EOF.
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
	// Wrap both ends so io.CopyBuffer uses our pooled buffer instead of
	// ReadFrom/WriteTo paths that allocate their own.
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
