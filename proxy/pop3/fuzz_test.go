package pop3

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/internal/fetest"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// fuzzConn is a client connection that sends in and then EOF, and keeps what the server
// writes. Deadlines are not kept: the input is all there is.
type fuzzConn struct {
	in io.Reader

	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (f *fuzzConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return f.in.Read(p)
}

func (f *fuzzConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	return f.out.Write(p)
}

func (f *fuzzConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fuzzConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 995} }
func (f *fuzzConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (f *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (f *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

type validatorFunc func(introspect.Request) (introspect.Identity, error)

func (v validatorFunc) Validate(_ context.Context, r introspect.Request) (introspect.Identity, error) {
	return v(r)
}

// fuzzValidator knows three tokens: "good" is alice's, "idp" finds the IdP down, anything
// else is invalid.
var fuzzValidator = validatorFunc(func(r introspect.Request) (introspect.Identity, error) {
	switch r.Token {
	case "good":
		return introspect.Identity{User: "alice"}, nil
	case "idp":
		return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrTemporary}
	}
	return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInvalidToken}
})

// capaLines are the lines a CAPA response may hold.
var capaLines = map[string]bool{
	"STLS": true, "SASL OAUTHBEARER XOAUTH2": true, "USER": true, "RESP-CODES": true,
	"AUTH-RESP-CODE": true, "IMPLEMENTATION saslgate": true,
}

// FuzzSession feeds arbitrary client bytes to a whole connection in the AUTHORIZATION state,
// on a STARTTLS listener (the first byte: bit 0 set makes it as if STLS were done, bit 1
// allows the token as the PASS password). Backend logins fail, so no session is spliced. It
// must not panic; every line the server writes is a +OK, -ERR or "+ " line of at most 512
// octets with its CRLF (RFC 2449 §4), or a line of a CAPA response; the server answers no
// more than it was asked, says nothing after its QUIT or too-many-commands reply, and the
// connection ends closed and released.
func FuzzSession(f *testing.F) {
	bearer := func(token string) string {
		return b64(string(sasl.EncodeOAuthBearer(sasl.Credentials{AuthzID: "alice", Token: token, CBFlag: 'n'})))
	}
	for _, seed := range []string{
		// RFC 1939's examples.
		"0USER mrose\r\nPASS secret\r\nSTAT\r\nQUIT\r\n",
		"3USER mrose\r\nPASS secret\r\nQUIT\r\n",
		"0APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
		// RFC 2449 §5, RFC 2595 §4.
		"0CAPA\r\nSTLS\r\n",
		"1CAPA\r\nSTLS\r\nNOOP\r\n",
		// RFC 5034 §5 and RFC 7628 §4's initial response.
		"1AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
		"1AUTH OAUTHBEARER bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB\r\nAQ==\r\nNOOP\r\n",
		"1AUTH OAUTHBEARER\r\n" + bearer("good") + "\r\nNOOP\r\n",
		"1AUTH XOAUTH2 " + xoauth2("alice", "idp") + "\r\nQUIT\r\n",
		"1AUTH XOAUTH2 =\r\n\r\n",
		"1AUTH OAUTHBEARER\r\n*\r\n",
		"1AUTH OAUTHBEARER " + b64("\x01") + "\r\n\r\n",
		"3USER alice\r\nPASS good\r\nUSER bob\r\nPASS good\r\n",
		"0\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
		"1auth oauthbearer !!!\r\n" + strings.Repeat("x", 300) + "\r\n",
		"1AUTH OAUTHBEARER\r\nab\rcd\r\n",
		"0QUIT\r\nNOOP\r\n",
		"0STLS\r\n\x16\x03\x01\x00\x05hello",
	} {
		f.Add(seed)
	}
	tlsConfig := fetest.NewCert(f).ServerTLS()
	f.Fuzz(func(t *testing.T, in string) {
		mode := byte(0)
		if in != "" {
			mode, in = in[0], in[1:]
		}
		s := &Server{
			Listener: proxy.ListenerConfig{Name: "fuzz", Protocol: "pop3", TLS: proxy.TLSStartTLS},
			Config:   Config{AllowTokenAsPassword: mode&2 != 0, MaxLineLength: 1024},
			Login: &proxy.Login{
				Validator: fuzzValidator,
				Router:    backends.Single("pop3", backends.Config{Address: "127.0.0.1:1", TLS: "none"}),
				Secrets:   fetest.SecretMap{"alice": "s3cret"},
			},
			Dial: func(context.Context, string, backends.Secret) (*backends.POP3Session, error) {
				return nil, fmt.Errorf("fuzz: %w", backends.ErrUnavailable)
			},
			TLSConfig: tlsConfig,
		}
		if err := s.fe.InitTLS(s.Listener, s.TLSConfig); err != nil {
			t.Fatal(err)
		}
		fc := &fuzzConn{in: strings.NewReader(in)}
		c := s.newConn(fc, "fuzz-1", proxy.NopObserver{}).(*conn)
		c.TLS = mode&1 != 0 // as if STLS were done
		released := 0
		c.Serve(func() { released++ })

		if released != 1 || !fc.closed {
			t.Fatalf("released %d times, closed %v; want once, closed", released, fc.closed)
		}
		if c.Authed() {
			t.Fatal("logged in after a session whose logins all fail")
		}
		out := fc.out.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("output does not end in CRLF: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
		if lines[0] != greeting {
			t.Fatalf("first line %q, want the greeting", lines[0])
		}
		replies, inCapa, last := 0, false, false
		for _, l := range lines {
			switch {
			case last:
				t.Fatalf("line %q after the last reply", l)
			case len(l)+2 > 512:
				t.Fatalf("line of %d octets", len(l)+2)
			case strings.ContainsAny(l, "\r\n"):
				t.Fatalf("bare CR or LF in %q", l)
			case inCapa && l == ".":
				inCapa = false
			case inCapa && !capaLines[l]:
				t.Fatalf("unknown CAPA line %q", l)
			case inCapa:
			case strings.HasPrefix(l, "+OK"), strings.HasPrefix(l, "-ERR"), strings.HasPrefix(l, "+ "):
				replies++
				inCapa = l == capaFollows
				last = l == "+OK Bye" || l == replyTooManyBad
			default:
				t.Fatalf("line %q is not +OK, -ERR or a challenge", l)
			}
		}
		if inCapa {
			t.Fatal("CAPA response without its final dot")
		}
		// The greeting, then at most one reply per line sent.
		if sent := strings.Count(in, "\n"); replies > 1+sent {
			t.Fatalf("%d replies to %d lines", replies-1, sent)
		}
	})
}
