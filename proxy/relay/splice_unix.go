//go:build unix

package relay

import (
	"io"
	"os"
	"syscall"
	"time"
)

// fdReader waits for a plain socket through its RawConn: each read(2) goes
// into a just-taken buffer, and on EAGAIN the buffer goes back to the pool
// before the goroutine parks in the netpoller. The syscalls are those of
// net.Conn.Read, and deadlines and Close still apply.
type fdReader struct {
	c   interface{ SetReadDeadline(time.Time) error }
	rc  syscall.RawConn
	try func(fd uintptr) bool // r.tryRead, bound once so a read allocates nothing
	bp  *[]byte
	n   int
	err error
}

// newFDReader returns nil if c has no usable descriptor.
func newFDReader(c syscall.Conn, dl interface{ SetReadDeadline(time.Time) error }) waitReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &fdReader{c: dl, rc: rc}
	r.try = r.tryRead
	return r
}

func (r *fdReader) tryRead(fd uintptr) bool {
	r.bp = getSpliceBuf()
	for {
		r.n, r.err = syscall.Read(int(fd), *r.bp)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		putSpliceBuf(r.bp)
		r.bp = nil
		return false
	}
	return true
}

func (r *fdReader) read(deadline time.Time) (*[]byte, int, error) {
	r.c.SetReadDeadline(deadline)
	err := r.rc.Read(r.try)
	bp, n := r.bp, r.n
	r.bp = nil
	switch {
	case err != nil: // closed, or a deadline: the last try put its buffer back
		return nil, 0, err
	case r.err != nil:
		return bp, 0, os.NewSyscallError("read", r.err)
	case n == 0:
		return bp, 0, io.EOF
	}
	return bp, n, nil
}
