package backends

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// CheckGreeting is a pool's health check of one member: it connects (with the TLS handshake
// first for tls "implicit") and reads the protocol's greeting: IMAP "* OK", SMTP 220, POP3
// "+OK", ManageSieve's capability lines up to "OK". Nothing is sent; the connection is
// closed after the greeting. ctx bounds it all.
func CheckGreeting(ctx context.Context, protocol string, cfg Config) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if cfg.TLS == "implicit" {
		tc, err := cfg.withDefaults().TLSConfig()
		if err != nil {
			return err
		}
		c := tls.Client(conn, tc)
		if err := c.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		conn = c
	}
	r := bufio.NewReaderSize(conn, 1024)
	for lines := 0; lines < 64; lines++ {
		line, err := readLine(r, 1024)
		if err != nil {
			return fmt.Errorf("greeting: %w", err)
		}
		ok, more := greeted(protocol, line)
		if ok {
			return nil
		}
		if !more {
			return fmt.Errorf("greeting: unexpected %q", sanitize(string(line)))
		}
	}
	return fmt.Errorf("greeting: no end after 64 lines")
}

// greeted reads one greeting line of protocol: ok when it completes a good greeting, more
// when more lines of it follow.
func greeted(protocol string, line []byte) (ok, more bool) {
	switch protocol {
	case "imap":
		return bytes.HasPrefix(line, []byte("* OK")), false
	case "smtp":
		if bytes.HasPrefix(line, []byte("220-")) {
			return false, true
		}
		return bytes.HasPrefix(line, []byte("220 ")) || string(line) == "220", false
	case "pop3":
		return bytes.HasPrefix(line, []byte("+OK")), false
	case "sieve":
		if len(line) > 0 && line[0] == '"' {
			return false, true
		}
		return bytes.HasPrefix(line, []byte("OK")), false
	}
	// A protocol without a known greeting: a connection that sends a line is up.
	return true, false
}
