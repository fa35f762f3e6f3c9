package backends

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

// scriptServer accepts one connection on loopback and plays a transcript:
//
//	"S: line"  the server writes line + CRLF (line may embed CRLFs to pipeline several)
//	"C: line"  the server reads one line and expects exactly line
//	"TLS"      the server runs a TLS handshake with cert
//	"EOF"      the server expects the client to close without sending more
//
// It returns the address and a channel closed when the transcript is done.
func scriptServer(t *testing.T, cert tls.Certificate, script []string) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ln.Close()
		var conn net.Conn
		conn, err := ln.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer func() { conn.Close() }()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		for _, step := range script {
			switch {
			case strings.HasPrefix(step, "S: "):
				// Write errors are expected when the client gives up first.
				_, _ = io.WriteString(conn, step[3:]+"\r\n")
			case strings.HasPrefix(step, "C: "):
				line, err := br.ReadString('\n')
				if got := strings.TrimSuffix(line, "\r\n"); err != nil || got != step[3:] {
					t.Errorf("server read %q, %v; want %q", line, err, step[3:])
					return
				}
			case step == "TLS":
				tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}})
				if err := tc.Handshake(); err != nil {
					t.Errorf("server TLS handshake: %v", err)
					return
				}
				conn, br = tc, bufio.NewReader(tc)
			case step == "EOF":
				if b, err := br.ReadByte(); err == nil {
					t.Errorf("client sent %q, want it to close", b)
				}
			default:
				t.Errorf("bad script step %q", step)
			}
		}
	}()
	return ln.Addr().String(), done
}

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func TestDialIMAPScripted(t *testing.T) {
	cert, caFile := testCert(t)
	for _, tc := range []struct {
		name     string
		cfg      Config
		user     string
		secret   Secret
		script   []string
		wantErr  error    // nil: success
		wantText string   // substring of the error
		wantCaps []string // on success
		pipeline string   // on success: a line that must be readable from Reader
		client   Client
	}{{
		name: "SASL-IR, caps in greeting and tagged OK, pipelined untagged line",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN LOGINDISABLED] ready",
			"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: A1 OK [CAPABILITY IMAP4rev1 IDLE auth=plain] Logged in\r\n* 3 EXISTS",
		},
		wantCaps: []string{"IMAP4rev1", "IDLE"},
		pipeline: "* 3 EXISTS\r\n",
	}, {
		name: "no SASL-IR: continuation; greeting without caps; tagged OK without caps",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK ready",
			"C: A1 CAPABILITY",
			"S: * CAPABILITY IMAP4rev1 AUTH=PLAIN",
			"S: A1 OK done",
			"C: A2 AUTHENTICATE PLAIN",
			"S: + ",
			"C: " + plainIR("alice", "s3cret"),
			"S: A2 OK Logged in",
			"C: A3 CAPABILITY",
			"S: * CAPABILITY IMAP4rev1 IDLE NAMESPACE",
			"S: A3 OK done",
		},
		wantCaps: []string{"IMAP4rev1", "IDLE", "NAMESPACE"},
	}, {
		name: "bare + continuation and untagged CAPABILITY during login",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN",
			"S: +",
			"C: " + plainIR("alice", "s3cret"),
			"S: * CAPABILITY IMAP4rev1 CHILDREN",
			"S: A1 OK Logged in",
		},
		wantCaps: []string{"IMAP4rev1", "CHILDREN"},
	}, {
		name: "LOGIN with literals",
		cfg:  Config{TLS: "none", Login: "login"}, user: "jörg", secret: "a\"b\r\nc\\",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1] ready",
			"C: A1 LOGIN {5}",
			"S: + go on",
			"C: jörg {7}",
			"S: + go on",
			"C: a\"b",
			"C: c\\",
			"S: A1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in",
		},
		wantCaps: []string{"IMAP4rev1", "MOVE"},
	}, {
		name: "LOGIN quoted",
		cfg:  Config{TLS: "none", Login: "login"}, user: "alice@example.com", secret: "pass word",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1] ready",
			`C: A1 LOGIN "alice@example.com" "pass word"`,
			"S: A1 OK [CAPABILITY IMAP4rev1] Logged in",
		},
		wantCaps: []string{"IMAP4rev1"},
	}, {
		name: "LOGIN literal refused",
		cfg:  Config{TLS: "none", Login: "login"}, user: "alice", secret: "a\"b",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1] ready",
			`C: A1 LOGIN "alice" {3}`,
			"S: A1 NO [TOOBIG] no literals",
		},
		wantErr: ErrRejected, wantText: "NO [TOOBIG] no literals",
	}, {
		name: "LOGIN refused when LOGINDISABLED",
		cfg:  Config{TLS: "none", Login: "login"}, user: "alice", secret: "x",
		script:  []string{"S: * OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready", "EOF"},
		wantErr: ErrUnavailable, wantText: "LOGINDISABLED",
	}, {
		name: "tagged NO: rejected with backend text, secret redacted if echoed",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: A1 NO [AUTHENTICATIONFAILED] bad password s3cret " + plainIR("alice", "s3cret"),
		},
		wantErr: ErrRejected, wantText: "NO [AUTHENTICATIONFAILED] bad password [redacted] [redacted]",
	}, {
		name: "tagged NO [UNAVAILABLE] is temporary",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: A1 NO [UNAVAILABLE] Temporary authentication failure",
		},
		wantErr: ErrUnavailable, wantText: "Temporary authentication failure",
	}, {
		name: "NO before the continuation",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN",
			"S: A1 NO not now",
		},
		wantErr: ErrRejected, wantText: "not now",
	}, {
		name: "greeting BYE",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: * BYE Too many connections", "EOF"},
		wantErr: ErrUnavailable, wantText: "BYE Too many connections",
	}, {
		name: "greeting PREAUTH",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: * PREAUTH [CAPABILITY IMAP4rev1] logged in as someone", "EOF"},
		wantErr: ErrUnavailable, wantText: "PREAUTH",
	}, {
		name: "not IMAP",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: 220 smtp.example.com ESMTP", "EOF"},
		wantErr: ErrUnavailable, wantText: "greeting",
	}, {
		name: "over-long greeting",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script:  []string{"S: * OK " + strings.Repeat("x", maxResponseLen)},
		wantErr: ErrUnavailable, wantText: "longer than",
	}, {
		name: "BYE during login",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: * BYE shutting down",
		},
		wantErr: ErrUnavailable, wantText: "BYE shutting down",
	}, {
		name: "no AUTH=PLAIN",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 AUTH=GSSAPI] ready",
			"EOF",
		},
		wantErr: ErrUnavailable, wantText: "AUTH=PLAIN",
	}, {
		name: "STARTTLS: clear-text bytes after the OK are discarded, caps re-read over TLS",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready",
			"C: A1 STARTTLS",
			"S: A1 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR INJECTED",
			"TLS",
			"C: A2 CAPABILITY",
			"S: * CAPABILITY IMAP4rev1 AUTH=PLAIN",
			"S: A2 OK done",
			"C: A3 AUTHENTICATE PLAIN",
			"S: + ",
			"C: " + plainIR("alice", "s3cret"),
			"S: A3 OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
		},
		wantCaps: []string{"IMAP4rev1", "IDLE"},
	}, {
		name: "STARTTLS refused",
		cfg:  Config{TLS: "starttls", CAFile: caFile}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1] ready",
			"C: A1 STARTTLS",
			"S: A1 BAD no TLS here",
		},
		wantErr: ErrUnavailable, wantText: "starttls",
	}, {
		name: "untagged data with a literal is skipped",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK ready {5}",
			"C: A1 CAPABILITY",
			"S: * ID (\"name\" {4}\r\nDove)",
			"S: * CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR",
			"S: A1 OK done",
			"C: A2 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: A2 OK [CAPABILITY IMAP4rev1] ok",
		},
		wantCaps: []string{"IMAP4rev1"},
	}, {
		name: "response for another tag",
		cfg:  Config{TLS: "none"}, user: "alice", secret: "s3cret",
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: Z9 OK what",
		},
		wantErr: ErrUnavailable, wantText: "unknown tag",
	}, {
		name: "client address forwarded in ID before the login",
		cfg:  Config{TLS: "none", ForwardClientAddress: true}, user: "alice", secret: "s3cret",
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000"), Local: netip.MustParseAddrPort("[2001:db8::1]:993")},
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID] ready",
			`C: A1 ID ("x-originating-ip" "192.0.2.9" "x-originating-port" "40000" "x-connected-ip" "2001:db8::1" "x-connected-port" "993")`,
			`S: * ID ("name" "Dovecot")` + "\r\nA1 OK ID completed",
			"C: A2 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: A2 OK [CAPABILITY IMAP4rev1] ok",
		},
		wantCaps: []string{"IMAP4rev1"},
	}, {
		name: "no ID without the capability",
		cfg:  Config{TLS: "none", ForwardClientAddress: true}, user: "alice", secret: "s3cret",
		client: Client{Addr: netip.MustParseAddrPort("192.0.2.9:40000")},
		script: []string{
			"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
			"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
			"S: A1 OK [CAPABILITY IMAP4rev1] ok",
		},
		wantCaps: []string{"IMAP4rev1"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, done := scriptServer(t, cert, tc.script)
			tc.cfg.Address = addr
			tc.cfg.Timeout = config.Duration(5 * time.Second)
			sess, err := DialIMAP(context.Background(), tc.cfg, tc.user, tc.secret, tc.client)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(errString(err), tc.wantText) {
					t.Errorf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantText)
				}
				if strings.Contains(errString(err), tc.secret.Reveal()) {
					t.Errorf("error contains the secret: %v", err)
				}
				<-done
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if !slices.Equal(sess.Capabilities, tc.wantCaps) {
				t.Errorf("Capabilities = %q, want %q", sess.Capabilities, tc.wantCaps)
			}
			if tc.pipeline != "" {
				line, err := sess.Reader.ReadString('\n')
				if err != nil || line != tc.pipeline {
					t.Errorf("Reader gave %q, %v; want the pipelined %q", line, err, tc.pipeline)
				}
			}
			<-done
		})
	}
}

// silentServer accepts connections and never greets; onAccept runs for each.
func silentServer(t *testing.T, onAccept func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			onAccept()
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func TestDialIMAPTimeout(t *testing.T) {
	cfg := Config{Address: silentServer(t, func() {}), TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	_, err := DialIMAP(context.Background(), cfg, "alice", "s3cret", Client{})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cfg = Config{Address: silentServer(t, cancel), TLS: "none", Timeout: config.Duration(time.Minute)}
	if _, err := DialIMAP(ctx, cfg, "alice", "s3cret", Client{}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want ErrUnavailable and Canceled", err)
	}
}

func TestDialIMAPClearsDeadline(t *testing.T) {
	addr, done := scriptServer(t, tls.Certificate{}, []string{
		"S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready",
		"C: A1 AUTHENTICATE PLAIN " + plainIR("alice", "s3cret"),
		"S: A1 OK [CAPABILITY IMAP4rev1] ok",
		"C: late",
		"S: * late reply",
	})
	cfg := Config{Address: addr, TLS: "none", Timeout: config.Duration(100 * time.Millisecond)}
	sess, err := DialIMAP(context.Background(), cfg, "alice", "s3cret", Client{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	time.Sleep(250 * time.Millisecond) // real deadlines: wait past the login timeout
	if _, err := io.WriteString(sess.Conn, "late\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := sess.Reader.ReadString('\n'); err != nil || line != "* late reply\r\n" {
		t.Errorf("read %q, %v", line, err)
	}
	<-done
}
