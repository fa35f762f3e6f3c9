package sieve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/internal/sievewire"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
)

// panicWatch keeps the first log line that reports a panic in a connection.
type panicWatch struct{ line atomic.Pointer[string] }

func (w *panicWatch) Write(b []byte) (int, error) {
	if s := string(b); strings.Contains(s, `msg="panic in`) {
		w.line.CompareAndSwap(nil, &s)
	}
	return len(b), nil
}

// memBackend is one connection to an in-process backend, already logged in, that answers
// every line the relay writes to it with an OK. Reads wait for an answer; CloseWrite (the
// client's end) lets them drain what is left, then end.
type memBackend struct {
	mu      sync.Mutex
	cond    *sync.Cond
	out     bytes.Buffer
	eof     bool // no more input: reads end once out is drained
	closed  bool
	answers int
}

func newMemBackend() *memBackend {
	b := &memBackend{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *memBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.eof {
		return 0, net.ErrClosed
	}
	for _, c := range p {
		if c == '\n' && b.answers < 1000 {
			b.answers++
			b.out.WriteString(`OK "relayed ` + strconv.Itoa(b.answers) + `"` + "\r\n")
		}
	}
	b.cond.Broadcast()
	return len(p), nil
}

func (b *memBackend) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.out.Len() == 0 && !b.eof && !b.closed {
		b.cond.Wait()
	}
	switch {
	case b.closed:
		return 0, net.ErrClosed
	case b.out.Len() > 0:
		return b.out.Read(p)
	}
	return 0, io.EOF
}

func (b *memBackend) CloseWrite() error {
	b.mu.Lock()
	b.eof = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

func (b *memBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

func (b *memBackend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (*memBackend) LocalAddr() net.Addr              { return fetest.MemAddr{} }
func (*memBackend) RemoteAddr() net.Addr             { return fetest.MemAddr{} }
func (*memBackend) SetDeadline(time.Time) error      { return nil }
func (*memBackend) SetReadDeadline(time.Time) error  { return nil }
func (*memBackend) SetWriteDeadline(time.Time) error { return nil }

// FuzzSession feeds arbitrary client bytes, after TLS, then LOGOUT, to a connection in front
// of an in-process backend. No panic; the server sends only well-formed ManageSieve
// responses (RFC 5804 §4: capability lines, challenge strings, OK, NO and BYE lines, literals
// announced and delivered), the first its greeting; the session ends by itself, the client
// connection and every backend connection closed.
//
// Each input runs in memory, with no listener, socket or handshake: through the conn an
// accepted connection gets, counted as TLS (conn.plainTLS). No input waits for a timeout: a
// read past the client's bytes times out at once. The timeouts themselves are covered by the
// transcript tests.
func FuzzSession(f *testing.F) {
	good := xoauth2("alice", "good")
	for _, seed := range []string{
		`AUTHENTICATE "XOAUTH2" "` + good + "\"\r\nLISTSCRIPTS\r\nPUTSCRIPT \"a\" {5+}\r\nkeep;\r\n",
		`AUTHENTICATE "OAUTHBEARER" {` + strconv.Itoa(len(oauthbearer("", "good"))) + "+}\r\n" + oauthbearer("", "good") + "\r\nGETSCRIPT \"a\"\r\n",
		`AUTHENTICATE "OAUTHBEARER"` + "\r\n\"" + oauthbearer("alice", "good") + "\"\r\nNOOP\r\n",
		`AUTHENTICATE "XOAUTH2" "` + xoauth2("alice", "bad") + "\"\r\n\"\"\r\nNOOP \"x\"\r\n",
		`AUTHENTICATE "OAUTHBEARER" "` + b64("\x01") + "\"\r\n\"AQ==\"\r\nAUTHENTICATE \"XOAUTH2\" \"" + xoauth2("alice", "temporary") + "\"\r\n",
		`AUTHENTICATE "OAUTHBEARER"` + "\r\n\"*\"\r\nAUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n",
		"CAPABILITY\r\nNOOP\r\nNOOP {3+}\r\na\"b\r\nSTARTTLS\r\nHAVESPACE \"a\" 100\r\nFROB\r\n\r\n",
		"NOOP \"unterminated\r\nNOOP \"bad \\escape\"\r\nPUTSCRIPT \"x\" {99999+}\r\n",
		"capability\nlogout\n",
		"AUTHENTICATE {11+}\r\nOAUTHBEARER {4}\r\nAQ==\r\n",
		strings.Repeat("GET / HTTP/1.1\r\n", 12), // another protocol: BYE after MaxBadCommands
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
	tlsConfig *tls.Config
	watch     *panicWatch
	log       *slog.Logger
	mu        sync.Mutex
	backends  []*memBackend // of the running input
}

// fuzzListener has no TLS mode: the bytes of each input are those TLS would have delivered.
var fuzzListener = proxy.ListenerConfig{Name: "fuzz", Protocol: "sieve"}

func newSessionHarness(tb testing.TB) *sessionHarness {
	h := &sessionHarness{watch: &panicWatch{}}
	// Every record is formatted, as a real handler would, but without its time: coverage that
	// changed with the clock would pass for new.
	h.log = slog.New(slog.NewTextHandler(h.watch, &slog.HandlerOptions{ReplaceAttr: fetest.DropTime}))
	var err error
	if h.tlsConfig, err = fuzzListener.ServerTLS(fetest.NewCert(tb).ServerTLS()); err != nil {
		tb.Fatal(err)
	}
	return h
}

func (h *sessionHarness) server() *Server {
	be := backends.Config{Address: "backend.invalid:4190", TLS: "none"}
	srv := &Server{
		Listener: fuzzListener,
		Config: Config{
			Backend:           be,
			PreauthTimeout:    config.Duration(time.Second),
			ErrorReplyTimeout: config.Duration(100 * time.Millisecond),
			MaxLineLength:     2048,
			MaxLiteralSize:    1024,
		},
		TLSConfig: h.tlsConfig,
		Login:     &proxy.Login{Validator: fetest.FuzzValidator{}, Secrets: fetest.SecretMap{"alice": "backend-secret"}, Router: backends.Single("sieve", be)},
		Dial: func(context.Context, string, backends.Secret) (*backends.SieveSession, error) {
			b := newMemBackend()
			h.mu.Lock()
			h.backends = append(h.backends, b)
			h.mu.Unlock()
			return &backends.SieveSession{Conn: b, Reader: bufio.NewReader(b)}, nil
		},
		Logger: h.log,
	}
	_ = srv.fe.InitTLS(srv.Listener, srv.TLSConfig)
	caps := passedCapabilities([]backends.SieveCapability{
		{Name: "SIEVE", Value: "fileinto vacation", HasValue: true},
		{Name: "NOTIFY", Value: "mailto", HasValue: true},
		{Name: "VERSION", Value: "1.0", HasValue: true},
	})
	srv.caps.Store(&caps)
	return srv
}

func (h *sessionHarness) run(t *testing.T, in string) {
	nc := fetest.NewMemClient(in + "\r\nLOGOUT\r\n")
	c := h.server().newConn(nc, "fuzz-1", proxy.NopObserver{}).(*conn)
	c.plainTLS = &tls.ConnectionState{Version: tls.VersionTLS13}
	go c.Serve(func() {})
	select {
	case <-c.Finished():
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
	lines, err := responseLines(out)
	if err != nil {
		t.Fatalf("the server's output is not ManageSieve: %v\n%q", err, out)
	}
	// The greeting: capability lines, then its OK.
	i := 0
	for i < len(lines) && lines[i].capability {
		i++
	}
	if i == 0 || i == len(lines) || lines[i].text != `OK "saslgate ready."` {
		t.Errorf("the server did not begin with its greeting: %q", out[:min(len(out), 300)])
	}
	// RFC 5804 §1.3: BYE means the server is closing the connection.
	for j, l := range lines[:len(lines)-1] {
		if strings.HasPrefix(l.text, "BYE") {
			t.Errorf("line %d is %q, and the server went on with %q", j+1, l.text, lines[j+1].text)
			break
		}
	}

	h.mu.Lock()
	bes := h.backends
	h.backends = nil
	h.mu.Unlock()
	for i, b := range bes {
		if !b.isClosed() {
			t.Errorf("backend connection %d still open after the session ended", i+1)
		}
	}
}

// responseLine is one logical line of a ManageSieve server, its literals replaced by "L".
type responseLine struct {
	text       string
	capability bool // one or two strings: a capability line, a challenge, a listing entry
}

// responseLines splits a server's output into logical lines and checks each (RFC 5804 §4): a
// response-oknobye ("OK" / "NO" / "BYE", an optional parenthesised response code, an optional
// string), or one or two strings. Strings are quoted (DQUOTE, escaped DQUOTE and backslash,
// no CR or LF) or literals announced as "{n}" CRLF at a line's end and delivered in full.
func responseLines(out string) ([]responseLine, error) {
	var lines []responseLine
	for out != "" {
		var logical strings.Builder
		for {
			end := strings.Index(out, "\r\n")
			if end < 0 {
				return nil, fmt.Errorf("line %q is cut short or lacks CRLF", out)
			}
			line := out[:end]
			out = out[end+2:]
			n, start, ok := literalSuffix([]byte(line))
			if !ok || strings.HasSuffix(line, "+}") {
				logical.WriteString(line)
				break
			}
			if n > len(out) {
				return nil, fmt.Errorf("literal of %d bytes, %d sent", n, len(out))
			}
			logical.WriteString(line[:start] + `"L"`)
			out = out[n:]
		}
		l, err := checkResponseLine(logical.String())
		if err != nil {
			return nil, err
		}
		lines = append(lines, l)
	}
	return lines, nil
}

func checkResponseLine(s string) (responseLine, error) {
	toks, err := responseTokens(s)
	if err != nil {
		return responseLine{}, err
	}
	l := responseLine{text: s}
	switch {
	case len(toks) >= 1 && len(toks) <= 2 && toks[0][0] == '"' && toks[len(toks)-1][0] == '"':
		l.capability = true
		return l, nil
	case len(toks) == 0 || (toks[0] != "OK" && toks[0] != "NO" && toks[0] != "BYE"):
		return l, fmt.Errorf("line %q is neither a response nor strings", s)
	}
	rest := toks[1:]
	if len(rest) > 0 && rest[0] == "(" {
		// resp-code: an atom, optionally a string, then ")".
		switch {
		case len(rest) >= 3 && isCode(rest[1]) && rest[2] == ")":
			rest = rest[3:]
		case len(rest) >= 4 && isCode(rest[1]) && rest[2][0] == '"' && rest[3] == ")":
			rest = rest[4:]
		default:
			return l, fmt.Errorf("line %q has a malformed response code", s)
		}
	}
	if len(rest) > 1 || len(rest) == 1 && rest[0][0] != '"' {
		return l, fmt.Errorf("line %q: only a string may follow the response", s)
	}
	return l, nil
}

func isCode(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c == '-' || c == '/') {
			return false
		}
	}
	return true
}

// responseTokens splits a line into atoms, quoted strings (kept with their quotes) and
// parentheses, single spaces apart.
func responseTokens(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		if len(toks) > 0 {
			if s[i] != ' ' && s[i] != ')' && toks[len(toks)-1] != "(" {
				return nil, fmt.Errorf("line %q: no space between items", s)
			}
			if s[i] == ' ' {
				i++
			}
		}
		switch {
		case i == len(s):
			return nil, fmt.Errorf("line %q ends with a space", s)
		case s[i] == '(' || s[i] == ')':
			toks = append(toks, s[i:i+1])
			i++
		case s[i] == '"':
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' {
					j++
					if j == len(s) || s[j] != '"' && s[j] != '\\' {
						return nil, fmt.Errorf("line %q: bad escape", s)
					}
				}
			}
			if j == len(s) {
				return nil, fmt.Errorf("line %q: unterminated string", s)
			}
			toks = append(toks, s[i:j+1])
			i = j + 1
		default:
			j := i
			for j < len(s) && sievewire.IsAtomChar(s[j]) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("line %q: unexpected byte %q", s, s[i])
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}
