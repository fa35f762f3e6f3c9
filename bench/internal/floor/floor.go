// Package floor is the least a Go gateway does for the IMAP exchanges the benchmarks make:
// the floor of issue #20, against which saslgate's own cost is measured. It has no
// configuration, no SASL, no token validation, no routing, no limits, no logging and no
// framing: a session sends a greeting, reads one line (the client's login), has the
// backend session opened for it, answers the line's tag OK, and copies bytes both ways,
// 64 KiB per read, the TLS records of each write to the client in one write(2), as
// saslgate's relay.Coalesce does. It is for benchmarks only: it trusts every client.
package floor

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
)

// Login opens the backend session for the client's login line (CRLF included) and
// returns it ready for the client's next command.
type Login func(line []byte) (net.Conn, error)

// Serve serves ln until Accept fails: TLS with cfg, or plaintext if cfg is nil.
func Serve(ln net.Listener, cfg *tls.Config, login Login) error {
	for {
		raw, err := ln.Accept()
		if err != nil {
			return err
		}
		go session(raw, cfg, login)
	}
}

// bufSize is what saslgate's relay reads at a time (proxy/relay's spliceBufSize).
const bufSize = 64 << 10

func session(raw net.Conn, cfg *tls.Config, login Login) {
	c, batch := raw, (*batchConn)(nil)
	if cfg != nil {
		batch = &batchConn{Conn: raw}
		c = tls.Server(batch, cfg)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "* OK floor\r\n"); err != nil {
		return
	}
	br := bufio.NewReader(c)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	tag, _, _ := bytes.Cut(line, []byte(" "))
	tag = bytes.Clone(tag)
	bc, err := login(line)
	if err != nil {
		return
	}
	defer bc.Close()
	if _, err := c.Write(append(tag, " OK\r\n"...)); err != nil {
		return
	}
	go func() { // client to backend
		buf := make([]byte, bufSize)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				if _, werr := bc.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if tc, ok := bc.(interface{ CloseWrite() error }); ok {
					tc.CloseWrite()
				}
				return
			}
		}
	}()
	buf := make([]byte, bufSize)
	for { // backend to client, until the backend closes (after LOGOUT)
		n, err := bc.Read(buf)
		if n > 0 {
			if batch != nil {
				batch.collect = true
			}
			_, werr := c.Write(buf[:n])
			if batch != nil {
				werr = batch.flush(werr)
			}
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// batchConn is the floor's relay.Coalesce: while collect is set, the records crypto/tls
// writes are appended to buf, and flush sends them in one write. Only the goroutine that
// copies to the client sets collect; crypto/tls's reader writes only to answer a KeyUpdate
// or a bad record, which the benchmarks' clients do not send.
type batchConn struct {
	net.Conn
	collect bool
	buf     []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	if b.collect {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) flush(err error) error {
	b.collect = false
	if err == nil && len(b.buf) > 0 {
		_, err = b.Conn.Write(b.buf)
	}
	b.buf = b.buf[:0]
	return err
}
