package fetest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Client is a line-level client for transcript tests: it logs what it sends ("C:") and
// reads ("S:"), and any failure ends the test it belongs to.
type Client struct {
	T  *testing.T
	NC net.Conn
	BR *bufio.Reader
}

// Dial connects to addr, over TLS with cfg unless cfg is nil, for at most 10 seconds of the
// test; the test's cleanup closes the connection. It reads nothing.
func Dial(t *testing.T, addr string, cfg *tls.Config) *Client {
	t.Helper()
	var nc net.Conn
	var err error
	if cfg != nil {
		nc, err = tls.Dial("tcp", addr, cfg)
	} else {
		nc, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &Client{T: t, NC: nc, BR: bufio.NewReader(nc)}
}

// Send writes line and a CRLF.
func (c *Client) Send(line string) {
	c.T.Helper()
	c.T.Logf("C: %.200q", line)
	if _, err := io.WriteString(c.NC, line+"\r\n"); err != nil {
		c.T.Fatal(err)
	}
}

// Line reads one line, which must end in CRLF, and returns it without.
func (c *Client) Line() string {
	c.T.Helper()
	line, err := c.BR.ReadString('\n')
	if err != nil {
		c.T.Fatalf("reading a line: %q, %v", line, err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		c.T.Fatalf("line %q does not end in CRLF", line)
	}
	line = strings.TrimSuffix(line, "\r\n")
	c.T.Logf("S: %.200q", line)
	return line
}

// Expect reads one line and checks its prefix; it returns the line.
func (c *Client) Expect(prefix string) string {
	c.T.Helper()
	line := c.Line()
	if !strings.HasPrefix(line, prefix) {
		c.T.Fatalf("got %q, want prefix %q", line, prefix)
	}
	return line
}

// ExpectLine reads one line and checks all of it.
func (c *Client) ExpectLine(want string) {
	c.T.Helper()
	if line := c.Line(); line != want {
		c.T.Fatalf("got %q, want %q", line, want)
	}
}

// ExpectEOF checks that the server has closed the connection, with no line left to read.
func (c *Client) ExpectEOF() {
	c.T.Helper()
	if line, err := c.BR.ReadString('\n'); err == nil {
		c.T.Fatalf("got %q, want the connection closed", line)
	}
}

// StartTLS runs the client's side of the TLS handshake on the connection, once the server
// has agreed to it, and carries on over TLS.
func (c *Client) StartTLS(cfg *tls.Config) {
	c.T.Helper()
	tc := tls.Client(c.NC, cfg)
	if err := tc.Handshake(); err != nil {
		c.T.Fatal(err)
	}
	c.NC, c.BR = tc, bufio.NewReader(tc)
}

// TLSState is the connection's TLS state; the connection must be over TLS.
func (c *Client) TLSState() tls.ConnectionState {
	c.T.Helper()
	tc, ok := c.NC.(*tls.Conn)
	if !ok {
		c.T.Fatal("the connection is not over TLS")
	}
	return tc.ConnectionState()
}
