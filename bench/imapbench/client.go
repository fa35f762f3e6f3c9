//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// imapConn is a minimal IMAP client: enough to log in, FETCH (literals are
// counted and skipped, never parsed), NOOP, IDLE and LOGOUT with little CPU
// of its own, so the client disturbs the servers it measures as little as
// possible on a shared two-core machine.
type imapConn struct {
	nc   net.Conn
	br   *bufio.Reader
	tags int
	tls  tls.ConnectionState
}

// opTimeout bounds each client exchange; a stuck server fails the run
// instead of hanging it.
const opTimeout = 60 * time.Second

// sourceIPs spreads client connections over several loopback source
// addresses so 10,000 sessions plus TIME_WAIT leftovers of the login runs
// never exhaust one address's ephemeral ports.
var (
	sourceIPs  = makeSourceIPs(16)
	nextSource atomic.Uint32
)

func makeSourceIPs(n int) []*net.TCPAddr {
	var a []*net.TCPAddr
	for i := 1; i <= n; i++ {
		a = append(a, &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i))})
	}
	return a
}

// ipBindAddressNoPort (IP_BIND_ADDRESS_NO_PORT, linux/in.h) defers the choice
// of the source port to connect(), where only the 4-tuple must be unique.
const ipBindAddressNoPort = 24

var dialer = net.Dialer{
	Timeout: 10 * time.Second,
	Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
		})
		return errors.Join(err, serr)
	},
}

// dialTLS connects from the next source address, completes a TLS handshake
// with cfg and reads the greeting. cfg nil is w.clientTLS, which keeps no
// session cache: a full handshake every time. A cfg with a
// ClientSessionCache resumes the session of its previous connection.
func (w *world) dialTLS(ctx context.Context, addr string, bufSize int, cfg *tls.Config) (*imapConn, error) {
	d := dialer
	d.LocalAddr = sourceIPs[int(nextSource.Add(1))%len(sourceIPs)]
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = w.clientTLS
	}
	tc := tls.Client(raw, cfg)
	_ = tc.SetDeadline(time.Now().Add(opTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	c := &imapConn{nc: tc, br: bufio.NewReaderSize(tc, bufSize), tls: tc.ConnectionState()}
	if err := c.greeting(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// dialPlain connects without TLS (Dovecot's readiness check).
func (w *world) dialPlain(addr string) (*imapConn, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := &imapConn{nc: raw, br: bufio.NewReaderSize(raw, 4096)}
	if err := c.greeting(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *imapConn) close() { c.nc.Close() }

func (c *imapConn) greeting() error {
	for {
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("greeting: %w", err)
		}
		// Dovecot may say "Waiting for authentication process" first.
		if bytes.HasPrefix(line, []byte("* OK")) {
			if bytes.Contains(line, []byte("Waiting for auth")) {
				continue
			}
			return nil
		}
		return fmt.Errorf("greeting: %q", line)
	}
}

// readLine returns one line including CRLF; it is valid until the next read.
func (c *imapConn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err == nil {
		return line, nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	long := append([]byte(nil), line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		line, err = c.br.ReadSlice('\n')
		long = append(long, line...)
	}
	return long, err
}

// literalSize returns n if line ends with {n} (or {n+}) CRLF.
func literalSize(line []byte) (int64, bool) {
	l := bytes.TrimRight(line, "\r\n")
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(string(l[i+1:len(l)-1]), "+"), 10, 64)
	return n, err == nil
}

// cmd sends one command and reads to its tagged completion, skipping
// literals; it returns the literal bytes seen and fails unless OK.
func (c *imapConn) cmd(format string, args ...any) (int64, error) {
	c.tags++
	tag := "t" + strconv.Itoa(c.tags)
	_ = c.nc.SetDeadline(time.Now().Add(opTimeout))
	if _, err := fmt.Fprintf(c.nc, tag+" "+format+"\r\n", args...); err != nil {
		return 0, err
	}
	return c.await(tag)
}

func (c *imapConn) await(tag string) (int64, error) {
	var lit int64
	for {
		line, err := c.readLine()
		if err != nil {
			return lit, err
		}
		if n, ok := literalSize(line); ok {
			if _, err := c.br.Discard(int(n)); err != nil {
				return lit, err
			}
			lit += n
			continue
		}
		if len(line) > len(tag) && string(line[:len(tag)]) == tag && line[len(tag)] == ' ' {
			if !bytes.HasPrefix(line[len(tag)+1:], []byte("OK")) {
				return lit, fmt.Errorf("%s", bytes.TrimSpace(line))
			}
			return lit, nil
		}
	}
}

// login is LOGIN with a user name and password (nginx, Dovecot direct).
func (c *imapConn) login(user, pass string) error {
	_, err := c.cmd("LOGIN %s %s", quote(user), quote(pass))
	return err
}

// oauthBearer is AUTHENTICATE OAUTHBEARER with SASL-IR (RFC 7628 §3.1,
// RFC 4959), the way Thunderbird sends it.
func (c *imapConn) oauthBearer(user, token string) error {
	ir := "n,a=" + user + ",\x01auth=Bearer " + token + "\x01\x01"
	_, err := c.cmd("AUTHENTICATE OAUTHBEARER %s", base64.StdEncoding.EncodeToString([]byte(ir)))
	return err
}

// idle starts IDLE and returns once the server said "+".
func (c *imapConn) idle() error {
	c.tags++
	_ = c.nc.SetDeadline(time.Now().Add(opTimeout))
	if _, err := fmt.Fprintf(c.nc, "t%d IDLE\r\n", c.tags); err != nil {
		return err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if line[0] == '+' {
			_ = c.nc.SetDeadline(time.Time{})
			return nil
		}
		if line[0] != '*' {
			return fmt.Errorf("IDLE: %q", bytes.TrimSpace(line))
		}
	}
}

// logout sends LOGOUT and waits for its tagged OK.
func (c *imapConn) logout() error {
	_, err := c.cmd("LOGOUT")
	return err
}

// resumingClient is the TLS configuration of one client goroutine that
// resumes its sessions: the bench's, with a session cache of its own, as a
// mail client keeps one per account. One entry: the goroutine talks to one
// server.
func (w *world) resumingClient() *tls.Config {
	cfg := w.clientTLS.Clone()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	return cfg
}

// suiteName describes the negotiated TLS parameters.
func suiteName(c *imapConn) string {
	s := c.tls
	return fmt.Sprintf("%s %s %s", tls.VersionName(s.Version), tls.CipherSuiteName(s.CipherSuite), s.CurveID)
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
