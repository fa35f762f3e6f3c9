package relay

import (
	"crypto/tls"
	"net"
	"sync"
)

// Coalesce wraps a client's socket under its TLS layer, tls.Server(relay.Coalesce(raw),
// cfg), so that the splice sends the records crypto/tls makes of one write in one system
// call: crypto/tls writes each record (at most 16 KiB) to its connection on its own; one
// write(2) per four records took the gateway's CPU per GB relayed from 1.1 to 0.85 s
// (issue #20, bench/README.md). Outside the splice's writes, and on the way in, the wrapper passes
// everything through; it holds a buffer only while a write is being collected.
func Coalesce(c net.Conn) net.Conn {
	return &coalescer{Conn: c}
}

// coalesceBufSize fits the records of one spliceBufSize read: 16 KiB records add 22
// (TLS 1.3) or 29 (TLS 1.2) bytes each; the small records of crypto/tls's dynamic
// sizing at a connection's start add more, and a batch that would overflow is sent early.
const coalesceBufSize = spliceBufSize + 4<<10

var coalesceBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, coalesceBufSize)
	return &b
}}

// coalescer is the socket under a client's tls.Conn. Between collect and flush, the
// records crypto/tls writes are appended to buf; any goroutine's (crypto/tls answers a
// KeyUpdate from its reader), so that the order on the wire is the order of the writes.
type coalescer struct {
	net.Conn

	mu  sync.Mutex
	buf *[]byte // non-nil while collecting
}

// Write appends p to the batch being collected, or writes it.
func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return c.Conn.Write(p)
	}
	b := *c.buf
	if len(b)+len(p) > cap(b) {
		if err := c.sendLocked(); err != nil {
			return 0, err
		}
		b = *c.buf
		if len(p) > cap(b) {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(b, p...)
	return len(p), nil
}

// collect starts collecting writes; flush must follow.
func (c *coalescer) collect() {
	c.mu.Lock()
	c.buf = coalesceBufs.Get().(*[]byte)
	c.mu.Unlock()
}

// flush sends what was collected, and stops collecting.
func (c *coalescer) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.sendLocked()
	coalesceBufs.Put(c.buf)
	c.buf = nil
	return err
}

func (c *coalescer) sendLocked() error {
	b := *c.buf
	*c.buf = b[:0]
	if len(b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(b)
	return err
}

// CloseWrite half-closes the socket, as a *net.TCPConn under it would.
func (c *coalescer) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// coalescerOf returns the coalescer under c, a TLS connection, or nil.
func coalescerOf(c net.Conn) *coalescer {
	if tc, ok := c.(*tls.Conn); ok {
		co, _ := tc.NetConn().(*coalescer)
		return co
	}
	return nil
}

// writeCoalesced writes p to dst, whose records co collects; co may be nil. Nothing else
// may write to dst in between and expect its bytes sent when its write returns: a
// downstream calls it under its lock.
func writeCoalesced(dst net.Conn, co *coalescer, p []byte) (int, error) {
	if co == nil {
		return dst.Write(p)
	}
	co.collect()
	n, err := dst.Write(p)
	if ferr := co.flush(); err == nil {
		err = ferr
	}
	return n, err
}
