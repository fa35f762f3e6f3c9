package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/config"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/tls/certs"
)

// fuzzValidator accepts the token "good" for alice, fails "temporary" for a while, and
// refuses everything else.
type fuzzValidator struct{}

func (fuzzValidator) Validate(_ context.Context, r introspect.Request) (introspect.Identity, error) {
	switch r.Token {
	case "good":
		return introspect.Identity{User: "alice"}, nil
	case "temporary":
		return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrTemporary, Reason: "fuzz"}
	}
	return introspect.Identity{}, &introspect.Error{Kind: introspect.ErrInvalidToken, Reason: "fuzz"}
}

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

// FuzzSession feeds arbitrary client bytes, after TLS, to the front end relaying to a sink:
// no panic, no connection left hanging past its timeouts.
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
	} {
		f.Add(seed)
	}
	watch := &panicWatch{}
	k := newSink(f, nil)
	go func() {
		for {
			select {
			case <-k.got:
			case <-k.aborted:
			}
		}
	}()
	cert, certPEM, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := &Server{
		Listener: proxy.ListenerConfig{Name: "fuzz", Protocol: "smtp", Address: ln.Addr().String(), TLS: proxy.TLSImplicit},
		Config: Config{
			Backend:           backends.Config{Address: k.addr, TLS: "none", Hostname: "gw.example"},
			PreauthTimeout:    config.Duration(time.Second),
			IdleTimeout:       config.Duration(500 * time.Millisecond),
			ErrorReplyTimeout: config.Duration(100 * time.Millisecond),
			Hostname:          "mx.example",
		},
		TLSConfig: certs.FromCertificate(cert).TLSConfig(),
		Validator: fuzzValidator{},
		Secrets:   secretMap{"alice": "backend-secret"},
		Logger:    slog.New(slog.NewTextHandler(watch, nil)),
	}
	go srv.Serve(ln)
	f.Cleanup(func() { srv.Close() })
	tlsCfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}

	f.Fuzz(func(t *testing.T, in string) {
		nc, err := tls.Dial("tcp", ln.Addr().String(), tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		go io.WriteString(nc, in+"\r\nQUIT\r\n")
		_, err = io.Copy(io.Discard, nc)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open after 10s")
		}
		if line := watch.line.Load(); line != nil {
			t.Fatalf("a panic was logged (by this input or an earlier one): %s", *line)
		}
	})
}
