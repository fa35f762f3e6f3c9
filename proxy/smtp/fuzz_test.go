package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
)

// panicWatch keeps the first log line that reports a panic in saslgate's code: go-smtp
// recovers panics in session methods and only logs them. (go-smtp v0.25.1 has one of its own,
// kept in testdata: a BDAT goroutine calling Data on the nil session of a connection that QUIT
// has closed.)
type panicWatch struct{ line atomic.Pointer[string] }

func (w *panicWatch) Write(b []byte) (int, error) {
	s := string(b)
	ours := strings.Contains(s, "saslgate/saslgate/proxy/") || strings.Contains(s, "saslgate/saslgate/backends.")
	if strings.Contains(s, "panic serving") && ours || strings.Contains(s, `msg="panic in`) {
		w.line.CompareAndSwap(nil, &s)
	}
	return len(b), nil
}

// memBackend is one connection to an in-process backend, already logged in, that answers
// each command as the client writes it: everything is accepted but RCPT
// TO:<nobody@example.com> (550) and RCPT TO:<gone@example.com> (421, then it hangs up).
// Nothing blocks: a read with no reply due, which would wait forever on a real backend, is
// recorded as stuck.
type memBackend struct {
	mu     sync.Mutex
	line   []byte       // the command or data line being written
	out    bytes.Buffer // replies not yet read
	data   bool         // between DATA's 354 and the final dot
	hungUp bool         // after the 421: reads get io.EOF, writes fail
	stuck  bool
	closed bool
}

var memBackendExtensions = backends.Extensions{"8BITMIME": "", "SMTPUTF8": "", "DSN": "", "PIPELINING": "", "SIZE": "100000"}

func newMemBackend() *memBackend {
	b := &memBackend{}
	b.out.WriteString("220 backend.example ESMTP\r\n")
	return b
}

func (b *memBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.hungUp {
		return 0, io.ErrClosedPipe
	}
	for _, c := range p {
		b.line = append(b.line, c)
		if c == '\n' {
			b.answer(string(b.line))
			b.line = b.line[:0]
		}
	}
	return len(p), nil
}

func (b *memBackend) answer(line string) {
	if b.data {
		if line == ".\r\n" {
			b.data = false
			b.out.WriteString("250 2.0.0 Ok: queued as 4XyZ\r\n")
		}
		return
	}
	cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
	switch {
	case strings.HasPrefix(cmd, "EHLO "):
		b.out.WriteString("250-backend.example\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
	case strings.HasPrefix(cmd, "RCPT TO:<NOBODY@EXAMPLE.COM>"):
		b.out.WriteString("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown\r\n")
	case strings.HasPrefix(cmd, "RCPT TO:<GONE@EXAMPLE.COM>"):
		b.out.WriteString("421 4.3.0 backend.example closing\r\n")
		b.hungUp = true
	case cmd == "DATA":
		b.data = true
		b.out.WriteString("354 End data with <CR><LF>.<CR><LF>\r\n")
	case cmd == "QUIT":
		b.out.WriteString("221 2.0.0 Bye\r\n")
		b.hungUp = true
	default:
		b.out.WriteString("250 2.0.0 Ok\r\n")
	}
}

func (b *memBackend) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, net.ErrClosed
	case b.out.Len() > 0:
		return b.out.Read(p)
	case !b.hungUp:
		b.stuck = true
	}
	return 0, io.EOF
}

func (b *memBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

func (b *memBackend) state() (stuck, closed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stuck, b.closed
}

func (*memBackend) LocalAddr() net.Addr              { return fetest.MemAddr{} }
func (*memBackend) RemoteAddr() net.Addr             { return fetest.MemAddr{} }
func (*memBackend) SetDeadline(time.Time) error      { return nil }
func (*memBackend) SetReadDeadline(time.Time) error  { return nil }
func (*memBackend) SetWriteDeadline(time.Time) error { return nil }

// isReplyLine reports whether line is one line of an SMTP reply (RFC 5321 §4.2): a code, a
// space or hyphen, text.
func isReplyLine(line string) bool {
	return len(line) >= 4 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
		line[2] >= '0' && line[2] <= '9' && (line[3] == ' ' || line[3] == '-')
}

// FuzzSession feeds arbitrary client bytes, after TLS, then QUIT, to a connection relaying
// to an in-process backend. No panic; the server sends only replies, the first its greeting;
// the session ends by itself, the client connection and every backend connection closed; and
// the relay never waits for a backend reply that is not due.
//
// Each input runs in memory, with no listener, socket or handshake: through the conn an
// accepted connection gets, its TLS state that of one handshake made beforehand
// (conn.plainTLS). No input waits for a timeout: a read past the client's bytes times out at
// once. The timeouts themselves are covered by the transcript tests.
func FuzzSession(f *testing.F) {
	good := xoauth2("alice", "good")
	for _, seed := range []string{
		"EHLO x\r\nAUTH XOAUTH2 " + good + "\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\n",
		"EHLO x\r\nAUTH OAUTHBEARER\r\n" + oauthbearer("", "good") + "\r\nMAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x\r\n" +
			"RCPT TO:<nobody@example.com>\r\nRCPT TO:<c@d> NOTIFY=NEVER ORCPT=rfc822;c@d\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nd\n",
		"EHLO x\r\nAUTH XOAUTH2 " + xoauth2("alice", "bad") + "\r\nAQ==\r\nMAIL FROM:<a@b>\r\n",
		"EHLO x\r\nAUTH OAUTHBEARER " + b64("\x01") + "\r\n*\r\nAUTH XOAUTH2 =\r\nAUTH XOAUTH2 " + xoauth2("alice", "temporary") + "\r\n",
		"EHLO x\r\nAUTH XOAUTH2 " + good + "\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nabRSET\r\nRSET\r\nMAIL FROM:<>\r\nRSET\r\nEHLO y\r\n",
		"HELO x\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\nBDAT x\r\nVRFY a\r\n\r\n",
		"EHLO x\r\nAUTH XOAUTH2 " + good + "\r\nMAIL FROM:<a@b>\r\nRCPT TO:<gone@example.com>\r\nRCPT TO:<c@d>\r\n",
	} {
		f.Add(seed)
	}
	h := newSessionHarness(f)
	f.Fuzz(h.run)
}

// sessionHarness runs each input on a Server of its own, set up as Serve would less the
// listener and the probe, so that no input sees what an earlier one left in the login
// pipeline's memory.
type sessionHarness struct {
	tlsConfig *tls.Config         // the servers', from ServerTLS
	tls       tls.ConnectionState // of a real handshake: channel binding reads it
	watch     *panicWatch
	log       *slog.Logger
	mu        sync.Mutex
	backends  []*memBackend // of the running input
}

// fuzzListener has no TLS mode: the bytes of each input are those TLS would have delivered.
var fuzzListener = proxy.ListenerConfig{Name: "fuzz", Protocol: "smtp"}

func newSessionHarness(tb testing.TB) *sessionHarness {
	h := &sessionHarness{watch: &panicWatch{}}
	// Every record is formatted, as a real handler would, but without its time: coverage that
	// changed with the clock would pass for new.
	h.log = slog.New(slog.NewTextHandler(h.watch, &slog.HandlerOptions{ReplaceAttr: fetest.DropTime}))
	cert := fetest.NewCert(tb)
	var err error
	if h.tlsConfig, err = fuzzListener.ServerTLS(cert.ServerTLS()); err != nil {
		tb.Fatal(err)
	}
	near, far := net.Pipe()
	defer near.Close()
	defer far.Close()
	ts := tls.Server(far, h.tlsConfig)
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tls.Client(near, cert.ClientTLS()).Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	h.tls = ts.ConnectionState()
	return h
}

func (h *sessionHarness) server() *Server {
	srv := &Server{
		Listener: fuzzListener,
		Config: Config{
			Backend:           backends.Config{Address: "backend.invalid:587", TLS: "none"},
			PreauthTimeout:    config.Duration(time.Second),
			IdleTimeout:       config.Duration(500 * time.Millisecond),
			ErrorReplyTimeout: config.Duration(100 * time.Millisecond),
			Hostname:          "mx.example",
		},
		TLSConfig: h.tlsConfig,
		Login:     &proxy.Login{Validator: fetest.FuzzValidator{}, Secrets: fetest.SecretMap{"alice": "backend-secret"}, Router: backends.Single("smtp", backends.Config{Address: "backend.invalid:587", TLS: "none"})},
		Dial: func(context.Context, string, backends.Secret) (*backends.SMTPSession, error) {
			b := newMemBackend()
			h.mu.Lock()
			h.backends = append(h.backends, b)
			h.mu.Unlock()
			return &backends.SMTPSession{Client: gosmtp.NewClient(b), Extensions: memBackendExtensions}, nil
		},
		Logger: h.log,
	}
	_ = srv.fe.InitTLS(srv.Listener, srv.TLSConfig)
	srv.domain = srv.Config.hostname("")
	srv.ext.Store(&memBackendExtensions)
	return srv
}

func (h *sessionHarness) run(t *testing.T, in string) {
	// Past its bytes, the client's reads time out at once: BDAT's check for a closed client
	// finds it there.
	nc := fetest.NewMemClient(in + "\r\nQUIT\r\n")
	c := h.server().newConn(nc, "fuzz-1", proxy.NopObserver{}).(*conn)
	c.plainTLS = &h.tls
	served := make(chan struct{})
	go func() {
		defer close(served)
		c.Serve(func() {})
	}()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end within 10s of the client's last byte")
	}
	if line := h.watch.line.Load(); line != nil {
		t.Fatalf("a panic was logged (by this input or an earlier one): %s", *line)
	}

	out, closed := nc.Result()
	if !closed {
		t.Error("the session ended with the client connection open")
	}
	if !strings.HasPrefix(out, "220 mx.example ") {
		t.Errorf("the server began with %.40q, not its greeting", out)
	}
	lines := strings.SplitAfter(out, "\r\n")
	if last := lines[len(lines)-1]; last != "" {
		t.Errorf("the server's last line, %q, is cut short", last)
	}
	for i, line := range lines[:len(lines)-1] {
		if !isReplyLine(line) {
			t.Errorf("line %d from the server is %q, not a reply", i+1, line)
		}
	}

	h.mu.Lock()
	bes := h.backends
	h.backends = nil
	h.mu.Unlock()
	for i, b := range bes {
		switch stuck, closed := b.state(); {
		case stuck:
			t.Errorf("backend connection %d: the relay waited for a reply the backend did not owe", i+1)
		case !closed:
			t.Errorf("backend connection %d still open after the session ended", i+1)
		}
	}
}
