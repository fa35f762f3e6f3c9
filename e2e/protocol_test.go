package e2e

import (
	"encoding/base64"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// login authenticates alice over w with OAUTHBEARER and SASL-IR and checks the
// tagged OK: any [CAPABILITY] in it must be the backend's post-auth list.
func (e *env) login(t *testing.T, w *wire, tag, token string) {
	t.Helper()
	w.send(tag + " AUTHENTICATE OAUTHBEARER " + oauthBearerIR(mailUser, "", 0, token))
	_, ok := w.expectTagged(tag, "OK")
	checkPostAuthCaps(t, ok)
}

func checkPostAuthCaps(t *testing.T, okLine string) {
	t.Helper()
	if i := strings.Index(okLine, "[CAPABILITY "); i >= 0 {
		for _, c := range strings.Fields(okLine[i+len("[CAPABILITY ") : strings.IndexByte(okLine[i:], ']')+i]) {
			if strings.HasPrefix(c, "AUTH=") || c == "LOGINDISABLED" || c == "STARTTLS" {
				t.Errorf("tagged OK advertises pre-auth capability %s: %q", c, okLine)
			}
		}
	}
}

// TestSpliceTranscript: after AUTHENTICATE the client talks to Dovecot itself.
func TestSpliceTranscript(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.imaps, e.tlsConfig())
	w.greeting()
	e.login(t, w, "a", e.grantToken(t, "alice"))
	w.send("b EXAMINE INBOX")
	untagged, _ := w.expectTagged("b", "OK [READ-ONLY]")
	if !slices.Contains(untagged, "* 1 EXISTS") {
		t.Errorf("EXAMINE untagged %q lack `* 1 EXISTS`", untagged)
	}
	w.send("c UID FETCH 1 BODY.PEEK[]")
	untagged, _ = w.expectTagged("c", "OK")
	want := "BODY[] {" + strconv.Itoa(len(seededBody)) + "}\r\n" + seededBody + ")"
	if len(untagged) != 1 || !strings.HasPrefix(untagged[0], "* 1 FETCH (") || !strings.HasSuffix(untagged[0], want) {
		t.Errorf("FETCH untagged = %q, want `* 1 FETCH (... %q`", untagged, want)
	}
	w.send("d LOGOUT")
	w.expect("* BYE")
	w.expectTagged("d", "OK")
	w.expectEOF()
}

// TestPipelinedAfterAuthenticate: commands the client sent in the same packet as
// AUTHENTICATE reach the backend (DESIGN.md: pipelined bytes are forwarded).
func TestPipelinedAfterAuthenticate(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.imaps, e.tlsConfig())
	w.greeting()
	ir := oauthBearerIR(mailUser, "", 0, e.grantToken(t, "alice"))
	w.logC("a AUTHENTICATE OAUTHBEARER <ir>\\r\\nb EXAMINE INBOX\\r\\nc LOGOUT   (one write)")
	w.write("a AUTHENTICATE OAUTHBEARER " + ir + "\r\nb EXAMINE INBOX\r\nc LOGOUT\r\n")
	_, ok := w.expectTagged("a", "OK")
	checkPostAuthCaps(t, ok)
	w.expectTagged("b", "OK [READ-ONLY]")
	w.expectTagged("c", "OK")
}

// TestPreAuthCommands: the pre-auth state machine's own commands.
func TestPreAuthCommands(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.imaps, e.tlsConfig())
	w.greeting()
	caps := w.capabilities("a")
	for _, want := range []string{"IMAP4rev1", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2"} {
		if !slices.Contains(caps, want) {
			t.Errorf("CAPABILITY %q lacks %s", caps, want)
		}
	}
	if slices.Contains(caps, "STARTTLS") {
		t.Errorf("implicit-TLS listener advertises STARTTLS: %q", caps)
	}
	w.send("b NOOP")
	w.expectTagged("b", "OK")
	w.send("c LOGOUT")
	w.expect("* BYE")
	w.expectTagged("c", "OK")
	w.expectEOF()
}

// TestAuthenticateWithoutInitialResponse: the continuation form (no SASL-IR), and
// the `*` cancel of RFC 3501 §6.2.2 (tagged BAD).
func TestAuthenticateWithoutInitialResponse(t *testing.T) {
	e := e2e(t)
	tok := e.grantToken(t, "alice")
	t.Run("ok", func(t *testing.T) {
		w := dialWire(t, e.gate.imaps, e.tlsConfig())
		w.greeting()
		w.send("a AUTHENTICATE OAUTHBEARER")
		w.expect("+")
		w.send(oauthBearerIR(mailUser, "", 0, tok))
		_, ok := w.expectTagged("a", "OK")
		checkPostAuthCaps(t, ok)
		w.send("b EXAMINE INBOX")
		w.expectTagged("b", "OK [READ-ONLY]")
	})
	t.Run("cancel", func(t *testing.T) {
		w := dialWire(t, e.gate.imaps, e.tlsConfig())
		w.greeting()
		w.send("a AUTHENTICATE OAUTHBEARER")
		w.expect("+")
		w.send("*")
		w.expectTagged("a", "BAD")
		w.send("b NOOP")
		w.expectTagged("b", "OK")
	})
	t.Run("initial response not base64", func(t *testing.T) {
		w := dialWire(t, e.gate.imaps, e.tlsConfig())
		w.greeting()
		w.send("a AUTHENTICATE OAUTHBEARER %%%not-base64%%%")
		w.expectTagged("a", "BAD")
	})
	t.Run("malformed OAUTHBEARER message", func(t *testing.T) {
		w := dialWire(t, e.gate.imaps, e.tlsConfig())
		w.greeting()
		w.send("a AUTHENTICATE OAUTHBEARER " + base64.StdEncoding.EncodeToString([]byte("n,,\x01nothing-here\x01\x01")))
		line := w.expect("a ")
		if !strings.HasPrefix(line, "a BAD") && !strings.HasPrefix(line, "a NO") {
			t.Fatalf("got %q, want a tagged BAD or NO", line)
		}
	})
}

// TestStartTLSListenerBeforeTLS: no authentication in the clear (RFC 7628 §3: TLS
// MUST be used; RFC 3501 LOGINDISABLED).
func TestStartTLSListenerBeforeTLS(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.starttls, nil)
	w.greeting()
	caps := w.capabilities("a")
	for _, want := range []string{"STARTTLS", "LOGINDISABLED"} {
		if !slices.Contains(caps, want) {
			t.Errorf("pre-TLS CAPABILITY %q lacks %s", caps, want)
		}
	}
	for _, c := range caps {
		if strings.HasPrefix(c, "AUTH=") {
			t.Errorf("pre-TLS CAPABILITY %q offers %s", caps, c)
		}
	}
	w.send("b AUTHENTICATE OAUTHBEARER " + oauthBearerIR(mailUser, "", 0, "not-sent-in-the-clear"))
	w.expectTagged("b", "NO [PRIVACYREQUIRED]")
	w.send("c AUTHENTICATE XOAUTH2")
	w.expectTagged("c", "NO [PRIVACYREQUIRED]")
	w.send(`d LOGIN "alice@example.com" "password"`)
	w.expectTagged("d", "NO [PRIVACYREQUIRED]")
	// Then STARTTLS and a normal login still work on the same connection.
	w.send("e STARTTLS")
	w.expectTagged("e", "OK")
	w.startTLS(e.tlsConfig())
	caps = w.capabilities("f")
	if slices.Contains(caps, "STARTTLS") || !slices.Contains(caps, "AUTH=OAUTHBEARER") || !slices.Contains(caps, "AUTH=XOAUTH2") {
		t.Errorf("post-TLS CAPABILITY %q: want AUTH=OAUTHBEARER and AUTH=XOAUTH2, no STARTTLS", caps)
	}
	e.login(t, w, "g", e.grantToken(t, "alice"))
	w.send("h EXAMINE INBOX")
	w.expectTagged("h", "OK [READ-ONLY]")
}

// TestStartTLSInjection: plaintext sent after STARTTLS in the same packet must be
// discarded, never executed inside the TLS session (CVE-2011-0411 class).
func TestStartTLSInjection(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.starttls, nil)
	w.greeting()
	w.logC("a STARTTLS\\r\\nb CAPABILITY   (one write)")
	w.write("a STARTTLS\r\nb CAPABILITY\r\n")
	w.expectTagged("a", "OK")
	w.startTLS(e.tlsConfig())
	w.send("c NOOP")
	untagged, _ := w.expectTagged("c", "OK")
	for _, l := range untagged {
		if strings.HasPrefix(l, "b ") || strings.HasPrefix(l, "* CAPABILITY") {
			t.Errorf("injected plaintext `b CAPABILITY` was answered inside TLS: %q", l)
		}
	}
	w.expectSilent(300 * time.Millisecond)
}

// TestOversizeLine: a pre-auth line over 64 KiB gets a tagged BAD, the rest of
// the line is skipped, and the connection stays usable.
func TestOversizeLine(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.imaps, e.tlsConfig())
	w.greeting()
	big := "a AUTHENTICATE OAUTHBEARER " + strings.Repeat("A", 70*1024)
	w.logC(big)
	go func() { _, _ = io.WriteString(w.conn, big+"\r\n") }()
	line, err := w.readLine(wireTimeout)
	if err != nil {
		t.Fatalf("no answer to a %d-byte line: %q, %v", len(big), line, err)
	}
	if !strings.HasPrefix(line, "a BAD ") {
		t.Fatalf("got %q, want a BAD for an oversize line", line)
	}
	stillServes(t, w)
}

// TestOversizeLiteral: a literal larger than the proxy accepts before
// authentication is refused instead of a continuation (RFC 9051 §7.5), and
// the client, which then does not send it, can go on.
func TestOversizeLiteral(t *testing.T) {
	e := e2e(t)
	w := dialWire(t, e.gate.imaps, e.tlsConfig())
	w.greeting()
	w.send("a LOGIN {1000000}")
	line, err := w.readLine(wireTimeout)
	if err != nil {
		t.Fatalf("read: %q, %v", line, err)
	}
	if !strings.HasPrefix(line, "a BAD ") {
		t.Fatalf("got %q, want a tagged BAD (no continuation) for a 1 MB literal", line)
	}
	stillServes(t, w)
}

// stillServes checks the connection answers NOOP after a refused input.
func stillServes(t *testing.T, w *wire) {
	t.Helper()
	w.send("b NOOP")
	line, err := w.readLine(wireTimeout)
	if err != nil || !strings.HasPrefix(line, "b OK") {
		t.Fatalf("after BAD, NOOP got %q, %v; want b OK", line, err)
	}
}

// TestDroppedConnections: clients vanishing mid-exchange leave the proxy serving.
func TestDroppedConnections(t *testing.T) {
	e := e2e(t)
	expired := e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60})
	drops := []struct {
		name string
		do   func(w *wire)
	}{
		{"after greeting", func(w *wire) {}},
		{"waiting for the SASL response", func(w *wire) {
			w.send("a AUTHENTICATE OAUTHBEARER")
			w.expect("+")
		}},
		{"half a line", func(w *wire) { w.write("a AUTHENTICATE OAUTHBEARER bixh") }},
		{"after the error challenge", func(w *wire) {
			w.send("a AUTHENTICATE OAUTHBEARER " + oauthBearerIR(mailUser, "", 0, expired))
			w.errorChallenge()
		}},
		{"raw 0x01 without CRLF (neomutt)", func(w *wire) {
			w.send("a AUTHENTICATE OAUTHBEARER " + oauthBearerIR(mailUser, "", 0, expired))
			w.errorChallenge()
			w.write("\x01")
		}},
		{"TLS handshake half done", nil},
	}
	for _, d := range drops {
		t.Run(d.name, func(t *testing.T) {
			if d.do == nil {
				c, err := net.Dial("tcp", e.gate.imaps)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01}) // a truncated ClientHello
				c.Close()
			} else {
				w := dialWire(t, e.gate.imaps, e.tlsConfig())
				w.greeting()
				d.do(w)
				w.conn.Close()
			}
			w := dialWire(t, e.gate.imaps, e.tlsConfig())
			w.greeting()
			e.login(t, w, "z", e.grantToken(t, "alice"))
			w.send("y EXAMINE INBOX")
			w.expectTagged("y", "OK [READ-ONLY]")
		})
	}
}
