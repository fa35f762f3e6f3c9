package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wire is a tiny IMAP transcript driver: send a line, expect a line. Every line is
// logged as C:/S: so a failing test shows the exact transcript.
type wire struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

const wireTimeout = 10 * time.Second

func dialWire(t *testing.T, addr string, tlsConf *tls.Config) *wire {
	t.Helper()
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if tlsConf != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsConf)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return newWire(t, c)
}

func newWire(t *testing.T, c net.Conn) *wire { return &wire{t: t, conn: c, r: bufio.NewReader(c)} }

// greeting reads the server greeting and checks it is an untagged OK.
func (w *wire) greeting() string {
	w.t.Helper()
	return w.expect("* OK")
}

func (w *wire) send(line string) {
	w.t.Helper()
	w.logC(line)
	w.write(line + "\r\n")
}

func (w *wire) write(s string) {
	w.t.Helper()
	_ = w.conn.SetWriteDeadline(time.Now().Add(wireTimeout))
	if _, err := io.WriteString(w.conn, s); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

func (w *wire) logC(line string) {
	w.t.Helper()
	if len(line) > 300 {
		line = line[:300] + "…(" + strconv.Itoa(len(line)) + " bytes)"
	}
	w.t.Logf("C: %s", line)
}

// readLine returns the next line without CRLF, or the read error.
func (w *wire) readLine(timeout time.Duration) (string, error) {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := w.r.ReadString('\n')
	if line != "" {
		w.t.Logf("S: %s", strings.TrimRight(line, "\r\n"))
	}
	if err != nil {
		return line, err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// expect reads one line and fails unless it starts with prefix.
func (w *wire) expect(prefix string) string {
	w.t.Helper()
	line, err := w.readLine(wireTimeout)
	if err != nil {
		w.t.Fatalf("want %q, got %q, error %v", prefix, line, err)
	}
	if !strings.HasPrefix(line, prefix) {
		w.t.Fatalf("want a line starting %q, got %q", prefix, line)
	}
	return line
}

// untilTagged reads lines until one starts with tag+" " and returns the untagged
// lines before it and the tagged line. Literals are read as part of their line.
func (w *wire) untilTagged(tag string) (untagged []string, tagged string) {
	w.t.Helper()
	for {
		line, err := w.readLine(wireTimeout)
		if err != nil {
			w.t.Fatalf("waiting for %q: got %q, error %v", tag, line, err)
		}
		if strings.HasPrefix(line, tag+" ") {
			return untagged, line
		}
		if n, ok := literalLen(line); ok {
			buf := make([]byte, n)
			if _, err := io.ReadFull(w.r, buf); err != nil {
				w.t.Fatalf("literal of %d bytes: %v", n, err)
			}
			w.t.Logf("S: <%d literal bytes>", n)
			line += "\r\n" + string(buf)
			rest, err := w.readLine(wireTimeout)
			if err != nil {
				w.t.Fatalf("after literal: %v", err)
			}
			line += rest
		}
		untagged = append(untagged, line)
	}
}

// literalLen reports a trailing {n} on a server line.
func literalLen(line string) (int, bool) {
	if !strings.HasSuffix(line, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n := 0
	for _, c := range line[i+1 : len(line)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// expectTagged reads until tag's completion and fails unless it starts with tag+" "+status.
func (w *wire) expectTagged(tag, status string) (untagged []string, tagged string) {
	w.t.Helper()
	untagged, tagged = w.untilTagged(tag)
	if !strings.HasPrefix(tagged, tag+" "+status) {
		w.t.Fatalf("want %q, got %q", tag+" "+status+"…", tagged)
	}
	return untagged, tagged
}

// expectSilent checks that nothing arrives for d; a closed connection also counts.
func (w *wire) expectSilent(d time.Duration) {
	w.t.Helper()
	line, err := w.readLine(d)
	if err == nil || line != "" {
		w.t.Fatalf("want no further output, got %q", line)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		if !errors.Is(err, io.EOF) {
			w.t.Logf("connection ended: %v", err)
		}
	}
}

// expectEOF checks the server closes the connection within the timeout, allowing an
// untagged BYE first.
func (w *wire) expectEOF() {
	w.t.Helper()
	for {
		line, err := w.readLine(wireTimeout)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				w.t.Fatalf("want the connection closed, still open after %v", wireTimeout)
			}
			return
		}
		if !strings.HasPrefix(line, "* BYE") {
			w.t.Fatalf("want EOF (or * BYE), got %q", line)
		}
	}
}

// errorChallenge reads a "+ <base64 JSON>" continuation and returns the decoded JSON.
func (w *wire) errorChallenge() map[string]any {
	w.t.Helper()
	line := w.expect("+ ")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(line, "+ "))
	if err != nil {
		w.t.Fatalf("challenge is not base64: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		w.t.Fatalf("challenge is not JSON: %q: %v", raw, err)
	}
	w.t.Logf("   (decoded: %s)", raw)
	return m
}

// capabilities sends CAPABILITY and returns the advertised atoms.
func (w *wire) capabilities(tag string) []string {
	w.t.Helper()
	w.send(tag + " CAPABILITY")
	untagged, _ := w.expectTagged(tag, "OK")
	for _, l := range untagged {
		if rest, ok := strings.CutPrefix(l, "* CAPABILITY "); ok {
			return strings.Fields(rest)
		}
	}
	w.t.Fatalf("no * CAPABILITY line in %q", untagged)
	return nil
}

// startTLS upgrades the connection after a tagged OK to STARTTLS.
func (w *wire) startTLS(conf *tls.Config) {
	w.t.Helper()
	tc := tls.Client(w.conn, conf)
	_ = tc.SetDeadline(time.Now().Add(wireTimeout))
	if err := tc.Handshake(); err != nil {
		w.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	w.t.Logf("   (%s established)", tls.VersionName(tc.ConnectionState().Version))
	w.conn = tc
	w.r = bufio.NewReader(tc)
}

// oauthBearerIR is the RFC 7628 §3.1 client response (gs2 header n, authzid a=user
// when given, host/port when given) base64-encoded for AUTHENTICATE.
func oauthBearerIR(user, host string, port int, token string) string {
	s := "n,"
	if user != "" {
		s += "a=" + user
	}
	s += ","
	if host != "" {
		s += "\x01host=" + host
	}
	if port != 0 {
		s += "\x01port=" + strconv.Itoa(port)
	}
	s += "\x01auth=Bearer " + token + "\x01\x01"
	return base64.StdEncoding.EncodeToString([]byte(s))
}

// xoauth2IR is Google's XOAUTH2 client response, base64-encoded.
func xoauth2IR(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}
