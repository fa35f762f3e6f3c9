package smtp

import (
	"crypto/sha256"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// message is what the sink received in one transaction.
type message struct {
	User string // who logged in (AUTH PLAIN)
	From string
	To   []string
	Mail gosmtp.MailOptions
	Rcpt []gosmtp.RcptOptions
	Body []byte // the data, when under 1 MiB
	Size int64
	Sum  [sha256.Size]byte
}

// sink is a go-smtp server standing in for Postfix: AUTH PLAIN with per-user secrets, MAIL
// only after AUTH, nobody@example.com refused, messages recorded, aborted ones counted.
type sink struct {
	secrets map[string]string
	srv     *gosmtp.Server
	addr    string
	got     chan message
	aborted chan error

	mu      sync.Mutex
	logins  int
	logouts int
}

func newSink(t testing.TB, configure func(*gosmtp.Server)) *sink {
	t.Helper()
	k := &sink{secrets: map[string]string{"alice": "backend-secret"},
		got: make(chan message, 16), aborted: make(chan error, 16)}
	k.srv = gosmtp.NewServer(k)
	k.srv.Domain = "sink.example"
	k.srv.AllowInsecureAuth = true
	k.srv.EnableDSN = true
	k.srv.EnableSMTPUTF8 = true
	k.srv.MaxMessageBytes = 50 << 20
	k.srv.ErrorLog = log.New(io.Discard, "", 0)
	if configure != nil {
		configure(k.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.addr = ln.Addr().String()
	go k.srv.Serve(ln)
	t.Cleanup(func() { k.srv.Close() })
	return k
}

func (k *sink) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &sinkSession{k: k}, nil }

func (k *sink) loginCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.logins
}

// waitLogouts waits until n backend sessions have ended.
func (k *sink) waitLogouts(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		k.mu.Lock()
		got := k.logouts
		k.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backend sessions ended, want %d", got, n)
		}
	}
}

type sinkSession struct {
	k   *sink
	msg message
}

func (s *sinkSession) AuthMechanisms() []string { return []string{gosasl.Plain} }

func (s *sinkSession) Auth(string) (gosasl.Server, error) {
	return gosasl.NewPlainServer(func(_, user, pass string) error {
		if want, ok := s.k.secrets[user]; !ok || pass != want {
			return gosmtp.ErrAuthFailed
		}
		s.k.mu.Lock()
		s.k.logins++
		s.k.mu.Unlock()
		s.msg.User = user
		return nil
	}), nil
}

func (s *sinkSession) Mail(from string, opts *gosmtp.MailOptions) error {
	if s.msg.User == "" {
		return errAuthRequired
	}
	s.msg.From, s.msg.Mail = from, *opts
	return nil
}

func (s *sinkSession) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if to == "nobody@example.com" {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "<nobody@example.com>: Recipient address rejected: User unknown"}
	}
	s.msg.To = append(s.msg.To, to)
	s.msg.Rcpt = append(s.msg.Rcpt, *opts)
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	h := sha256.New()
	var body []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if s.msg.Size += int64(n); s.msg.Size <= 1<<20 {
			body = append(body, buf[:n]...)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.k.aborted <- err
			return err
		}
	}
	m := s.msg
	m.Body = body
	h.Sum(m.Sum[:0])
	s.k.got <- m
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as 4XyZ"}
}

func (s *sinkSession) Reset() {
	user := s.msg.User
	s.msg = message{User: user}
}

func (s *sinkSession) Logout() error {
	s.k.mu.Lock()
	s.k.logouts++
	s.k.mu.Unlock()
	return nil
}
