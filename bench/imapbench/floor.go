//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/bench/internal/floor"
)

// floorMain is `imapbench floor`: bench/internal/floor, the least a Go gateway does for
// saslgate's exchange (issue #20), in front of Dovecot's plaintext port. Its login takes
// the user from the client's OAUTHBEARER initial response without validating the token,
// and logs in to Dovecot as saslgate does: AUTHENTICATE PLAIN with SASL-IR and the
// HMAC-derived secret. So its CPU is that of crypto/tls, the Go runtime and the kernel for
// the same bytes; what saslgate spends above it is its own code's.
func floorMain(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to serve")
	backend := fs.String("backend", "", "Dovecot's plaintext IMAP `address`")
	certFile := fs.String("cert", "", "certificate `file` (PEM)")
	keyFile := fs.String("key", "", "private key `file` (PEM)")
	hmacKeyFile := fs.String("hmac-key", "", "HMAC key `file` of the backend secrets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	key, err := backends.ReadHMACKeyFile(*hmacKeyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	return floor.Serve(ln, &tls.Config{Certificates: []tls.Certificate{cert}}, func(line []byte) (net.Conn, error) {
		user, err := oauthBearerUser(line)
		if err != nil {
			return nil, err
		}
		return plainLogin(*backend, user, backends.DeriveSecret(key, user).Reveal())
	})
}

// oauthBearerUser is the authzid of "TAG AUTHENTICATE OAUTHBEARER <ir>": the a= of the
// GS2 header (RFC 7628 §3.1), unchecked.
func oauthBearerUser(line []byte) (string, error) {
	f := bytes.Fields(line)
	if len(f) != 4 || !bytes.EqualFold(f[1], []byte("AUTHENTICATE")) {
		return "", fmt.Errorf("floor: not an AUTHENTICATE with an initial response: %q", line)
	}
	ir, err := base64.StdEncoding.DecodeString(string(f[3]))
	if err != nil {
		return "", err
	}
	gs2, _, _ := bytes.Cut(ir, []byte{1})
	_, user, ok := bytes.Cut(gs2, []byte(",a="))
	user = bytes.TrimSuffix(user, []byte(","))
	if !ok || len(user) == 0 {
		return "", errors.New("floor: no authzid in the GS2 header")
	}
	return string(user), nil
}

// plainLogin dials addr, reads the greeting and logs in with AUTHENTICATE PLAIN and an
// initial response (RFC 4959), one write and its tagged answer.
func plainLogin(addr, user, secret string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 512)
	fail := func(err error) (net.Conn, error) { c.Close(); return nil, err }
	if _, err := br.ReadSlice('\n'); err != nil {
		return fail(err)
	}
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + secret))
	if _, err := fmt.Fprintf(c, "a AUTHENTICATE PLAIN %s\r\n", ir); err != nil {
		return fail(err)
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fail(err)
		}
		if bytes.HasPrefix(line, []byte("a ")) {
			if !bytes.HasPrefix(line, []byte("a OK")) {
				return fail(fmt.Errorf("floor: backend login of %s: %q", user, line))
			}
			break
		}
	}
	if br.Buffered() > 0 {
		return fail(errors.New("floor: backend sent more than its login answer"))
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// startFloor starts `imapbench floor` in front of Dovecot's plaintext port, in its own
// process group as the proxies are, so that its CPU is measured the same way.
func (w *world) startFloor(ctx context.Context) (*gate, error) {
	g := &gate{name: "floor"}
	var err error
	if g.addr, err = freePort(); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	g.argv = []string{self, "floor", "-listen", g.addr, "-backend", w.dovecot.plain,
		"-cert", w.certFile, "-key", w.keyFile, "-hmac-key", w.hmacKeyFile}
	return g, g.start(ctx, w)
}
