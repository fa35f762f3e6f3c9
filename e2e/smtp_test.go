package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/saslgate/saslgate/backends"
)

// Every submitted message goes from alice to bob: bob's INBOX is read back through
// saslgate's IMAP side, while alice's stays at the one seeded message the IMAP tests count.
const (
	mailFrom = mailUser
	mailRcpt = mailUser2
)

var messageSeq atomic.Int64

// testMessage returns a message from alice to bob with a Message-ID unique to this run
// and a body line naming the client, CRLF line ends (RFC 5322).
func testMessage(client string) (msgID, msg string) {
	msgID = fmt.Sprintf("<%d.%d.%s@saslgate.e2e>", time.Now().UnixNano(), messageSeq.Add(1), strings.NewReplacer(" ", "-", "/", "-").Replace(client))
	msg = "From: Alice <" + mailFrom + ">\r\n" +
		"To: Bob <" + mailRcpt + ">\r\n" +
		"Subject: saslgate e2e via " + client + "\r\n" +
		"Message-ID: " + msgID + "\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\n" +
		"\r\n" +
		"Sent by " + client + " through the saslgate end-to-end test.\r\n"
	return msgID, msg
}

// fetchDelivered waits until the message with msgID is in bob's INBOX, read through
// saslgate's implicit-TLS IMAP listener with bob's token from the real grant, and
// returns it. Postfix delivers asynchronously (queue manager, then LMTP), so it polls.
func (e *env) fetchDelivered(t *testing.T, msgID string) string {
	t.Helper()
	body, err := e.searchBob(t, msgID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		t.Fatalf("message %s not in %s's INBOX after 20s (read through saslgate IMAP)", msgID, mailRcpt)
	}
	return body
}

// searchBob logs in to saslgate's IMAP listener as bob and searches the INBOX for
// msgID until it is found or wait has passed; it returns the message or "".
func (e *env) searchBob(t *testing.T, msgID string, wait time.Duration) (string, error) {
	t.Helper()
	return e.searchMailbox(t, mailRcpt, e.grantToken(t, "bob"), "INBOX", msgID, wait)
}

// searchMailbox is searchBob for user's mailbox, logged in with token; it creates the
// mailbox if it is not there.
func (e *env) searchMailbox(t *testing.T, user, token, mailbox, msgID string, wait time.Duration) (string, error) {
	t.Helper()
	c, err := imapclient.DialTLS(e.gate.imaps, &imapclient.Options{TLSConfig: e.tlsConfig()})
	if err != nil {
		return "", fmt.Errorf("IMAP through saslgate: %w", err)
	}
	defer c.Close()
	err = c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: token}))
	if err != nil {
		return "", fmt.Errorf("IMAP AUTHENTICATE OAUTHBEARER as %s through saslgate: %w", user, err)
	}
	if mailbox != "INBOX" {
		_ = c.Create(mailbox, nil).Wait() // ALREADYEXISTS is fine
	}
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return "", fmt.Errorf("EXAMINE %s: %w", mailbox, err)
	}
	criteria := &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: msgID}}}
	deadline := time.Now().Add(wait)
	for {
		if err := c.Noop().Wait(); err != nil {
			return "", fmt.Errorf("NOOP: %w", err)
		}
		data, err := c.UIDSearch(criteria, nil).Wait()
		if err != nil {
			return "", fmt.Errorf("UID SEARCH HEADER Message-ID: %w", err)
		}
		if uids := data.AllUIDs(); len(uids) > 0 {
			if len(uids) > 1 {
				t.Errorf("message %s delivered %d times (UIDs %v)", msgID, len(uids), uids)
			}
			section := &imap.FetchItemBodySection{Peek: true}
			msgs, err := c.Fetch(imap.UIDSetNum(uids[0]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
			if err != nil || len(msgs) != 1 {
				return "", fmt.Errorf("UID FETCH %d BODY.PEEK[]: %d messages, %v", uids[0], len(msgs), err)
			}
			_ = c.Logout().Wait()
			return string(msgs[0].FindBodySection(section)), nil
		}
		if time.Now().After(deadline) {
			_ = c.Logout().Wait()
			return "", nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkDelivered checks the delivered copy of msg: the original header and body
// unchanged after Postfix's own trace header, which names the SASL login Postfix saw
// (smtpd_sasl_authenticated_header): through saslgate that is the token's user.
func checkDelivered(t *testing.T, got, msg, authUser string) {
	t.Helper()
	if !strings.HasSuffix(got, msg) {
		t.Errorf("delivered message does not end with the submitted one:\n%s\nsubmitted:\n%s", got, msg)
	}
	if want := "(Authenticated sender: " + authUser + ")"; !strings.Contains(got, want) {
		t.Errorf("delivered message lacks %q in its Received header:\n%s", want, got)
	}
}

// TestPostfixDirect checks the backend loop without saslgate's SMTP side: Python
// smtplib logs in to Postfix with AUTH PLAIN and alice's derived secret (checked by
// Dovecot), Postfix delivers to bob over LMTP, and bob reads it through saslgate IMAP.
func TestPostfixDirect(t *testing.T) {
	e := e2eSMTP(t)
	msgID, msg := testMessage("smtplib PLAIN direct")
	r := e.smtplib(t, smtplibRun{
		addr: e.postfix.addr, mode: "plain", mech: "PLAIN", initialResponse: true,
		user: mailFrom, secret: backends.DeriveSecret(e.hmacKey, mailFrom).Reveal(), msg: msg,
	})
	if r.Error != "" || r.Auth[0] != 235 {
		t.Fatalf("smtplib to Postfix: %+v", r)
	}
	checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)
}

// smtpReply reads one SMTP reply (RFC 5321 §4.2: "ddd-text" lines, then "ddd text")
// and returns its lines.
func (w *wire) smtpReply() []string {
	w.t.Helper()
	var lines []string
	for {
		line, err := w.readLine(wireTimeout)
		if err != nil {
			w.t.Fatalf("reading a reply: got %q, error %v (reply so far %q)", line, err, lines)
		}
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

// expectReply reads one reply and fails unless its last line starts with prefix.
func (w *wire) expectReply(prefix string) []string {
	w.t.Helper()
	lines := w.smtpReply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		w.t.Fatalf("want a reply starting %q, got %q", prefix, lines)
	}
	return lines
}

// ehlo sends EHLO and returns the extension keywords with their parameters.
func (w *wire) ehlo() map[string]string {
	w.t.Helper()
	w.send("EHLO client.e2e.test")
	lines := w.expectReply("250 ")
	ext := map[string]string{}
	for _, l := range lines[1:] {
		kw, param, _ := strings.Cut(l[4:], " ")
		ext[strings.ToUpper(kw)] = param
	}
	return ext
}

// smtpErrorChallenge reads a "334 <base64 JSON>" error challenge and returns the JSON.
func (w *wire) smtpErrorChallenge() map[string]any {
	w.t.Helper()
	line := w.expect("334 ")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(line, "334 "))
	if err != nil {
		w.t.Fatalf("334 challenge is not base64: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		w.t.Fatalf("334 challenge is not JSON: %q: %v", raw, err)
	}
	w.t.Logf("   (decoded: %s)", raw)
	return m
}

// dialSMTPS connects to an implicit-TLS SMTP listener and reads the 220 greeting.
func (e *env) dialSMTPS(t *testing.T, addr string) *wire {
	t.Helper()
	w := dialWire(t, addr, e.tlsConfig())
	w.expectReply("220 ")
	return w
}

// TestSMTPBadTokens: a refused token gets the RFC 7628 §3.2.2 error challenge, then,
// after the client's reply, 535 5.7.8 (RFC 4954 §6), and the session goes on.
func TestSMTPBadTokens(t *testing.T) {
	e := e2eGateSMTP(t)
	for _, tc := range []struct {
		name, mech string
		token      func() string
		status     string // JSON status: RFC 7628 error code, or XOAUTH2's HTTP-style one
		reply      string // the client's answer to the error challenge
	}{
		{"invalid (not a JWT)", "OAUTHBEARER", func() string { return "bm90LWEtand0" }, "invalid_token", "AQ=="},
		{"expired", "OAUTHBEARER", func() string { return e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) }, "invalid_token", "AQ=="},
		{"wrong scope (no smtp)", "OAUTHBEARER", func() string { return e.mint(t, e.idp, mintRequest{Scope: "openid email imap"}) }, "insufficient_scope", "AQ=="},
		{"expired, empty reply (msmtp)", "OAUTHBEARER", func() string { return e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) }, "invalid_token", ""},
		{"XOAUTH2 expired", "XOAUTH2", func() string { return e.mint(t, e.idp, mintRequest{Age: 600, TTL: 60}) }, "401", ""},
		// RFC 6750 §3.1 maps insufficient_scope to 403 (Google sends 401 for everything; we
		// follow the RFC, and the scope tells the client what is missing).
		{"XOAUTH2 wrong scope", "XOAUTH2", func() string { return e.mint(t, e.idp, mintRequest{Scope: "openid email imap"}) }, "403", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.dialSMTPS(t, e.gate.smtps)
			w.ehlo()
			ir := oauthBearerIR(mailFrom, "", 0, tc.token())
			if tc.mech == "XOAUTH2" {
				ir = xoauth2IR(mailFrom, tc.token())
			}
			w.send("AUTH " + tc.mech + " " + ir)
			js := w.smtpErrorChallenge()
			if status, _ := js["status"].(string); status != tc.status {
				t.Errorf("error JSON status = %v, want %q", js["status"], tc.status)
			}
			if tc.status == "insufficient_scope" && !strings.Contains(fmt.Sprint(js["scope"]), "smtp") {
				t.Errorf("error JSON scope = %v, want it to name smtp", js["scope"])
			}
			w.send(tc.reply)
			w.expectReply("535 5.7.8 ")
			// RFC 4954 §4: a failed AUTH leaves the session unauthenticated, not closed.
			w.send("NOOP")
			w.expectReply("250 ")
			w.send("MAIL FROM:<" + mailFrom + ">")
			w.expectReply("530 5.7.0 ")
		})
	}
}

// TestSMTPTemporaryFailures: trouble that is not the client's fault is 454 4.7.0 at
// once, without an error challenge (DESIGN.md error table).
func TestSMTPTemporaryFailures(t *testing.T) {
	e := e2eGateSMTP(t)
	good, _ := e.validClaims(t)
	for _, tc := range []struct {
		name  string
		addr  func() string
		user  string
		token func() string
	}{
		{"backend down", func() string { return e.deadGate.smtps }, mailFrom,
			func() string { return e.mint(t, e.idp, mintRequest{}) }},
		{"backend rejects the derived secret", func() string { return e.gate.smtps }, noDovecot,
			func() string {
				return e.mint(t, e.idp, mintRequest{Sub: "carol", Claims: map[string]any{"email": noDovecot}})
			}},
		{"IdP unreachable", func() string { return e.gate.smtps }, mailFrom,
			func() string { return e.freshKeyToken(t, "dead-kid", withClaims(good, "iss", e.deadIss)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.dialSMTPS(t, tc.addr())
			w.ehlo()
			w.send("AUTH OAUTHBEARER " + oauthBearerIR(tc.user, "", 0, tc.token()))
			w.expectReply("454 4.7.0 ")
		})
	}
}

// TestSMTPAuthBeforeSTARTTLS: on the STARTTLS listener neither AUTH nor a token is
// accepted in the clear (RFC 7628 §3: TLS MUST be used; RFC 4954 §4 538 5.7.11 or
// RFC 3207's 530 5.7.0), EHLO offers no AUTH before TLS, and STARTTLS then works.
func TestSMTPAuthBeforeSTARTTLS(t *testing.T) {
	e := e2eGateSMTP(t)
	w := dialWire(t, e.gate.submission, nil)
	w.expectReply("220 ")
	ext := w.ehlo()
	if _, ok := ext["STARTTLS"]; !ok {
		t.Errorf("EHLO before TLS %v lacks STARTTLS", ext)
	}
	if auth, ok := ext["AUTH"]; ok {
		t.Errorf("EHLO before TLS offers AUTH %s", auth)
	}
	for _, line := range []string{
		"AUTH OAUTHBEARER " + oauthBearerIR(mailFrom, "", 0, "not-sent-in-the-clear"),
		"AUTH XOAUTH2",
		"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+mailFrom+"\x00password")),
	} {
		w.send(line)
		reply := w.smtpReply()
		if last := reply[len(reply)-1]; !strings.HasPrefix(last, "538 5.7.11 ") && !strings.HasPrefix(last, "530 5.7.0 ") {
			t.Errorf("%.20s… before STARTTLS: got %q, want 538 5.7.11 or 530 5.7.0", line, reply)
		}
	}
	w.send("STARTTLS")
	w.expectReply("220 ")
	w.startTLS(e.tlsConfig())
	ext = w.ehlo()
	if _, ok := ext["STARTTLS"]; ok {
		t.Errorf("EHLO after TLS still offers STARTTLS: %v", ext)
	}
	if mechs := strings.Fields(ext["AUTH"]); !containsAll(mechs, "OAUTHBEARER", "XOAUTH2") {
		t.Errorf("EHLO after TLS: AUTH %q, want OAUTHBEARER and XOAUTH2", ext["AUTH"])
	}
	w.send("AUTH OAUTHBEARER " + oauthBearerIR(mailFrom, "", 0, e.grantToken(t, "alice")))
	w.expectReply("235 ")
}

func containsAll(list []string, want ...string) bool {
	have := map[string]bool{}
	for _, s := range list {
		have[strings.ToUpper(s)] = true
	}
	for _, s := range want {
		if !have[s] {
			return false
		}
	}
	return true
}

// TestSMTPSTARTTLSInjection: commands pipelined after STARTTLS in the clear must be
// discarded, never answered inside TLS (CVE-2011-0411).
func TestSMTPSTARTTLSInjection(t *testing.T) {
	e := e2eGateSMTP(t)
	w := dialWire(t, e.gate.submission, nil)
	w.expectReply("220 ")
	w.ehlo()
	w.logC("STARTTLS\\r\\nRSET   (one write)")
	w.write("STARTTLS\r\nRSET\r\n")
	w.expectReply("220 ")
	w.startTLS(e.tlsConfig())
	w.send("NOOP")
	w.expectReply("250 ")
	w.expectSilent(300 * time.Millisecond)
}

// TestSMTPMailBeforeAuth: a transaction needs authentication (RFC 4954 §6: 530 5.7.0).
func TestSMTPMailBeforeAuth(t *testing.T) {
	e := e2eGateSMTP(t)
	w := e.dialSMTPS(t, e.gate.smtps)
	w.ehlo()
	w.send("MAIL FROM:<" + mailFrom + ">")
	w.expectReply("530 5.7.0 ")
	w.send("DATA")
	w.expectReply("5")
	w.send("QUIT")
	w.expectReply("221 ")
}

// TestSMTPOversizeTokenLine: an AUTH line over the line limit (default 64 KiB) ends
// with go-smtp's fixed "500 5.4.0 Too long line" and the connection closed (RFC 4954
// would have 500 5.5.6; go-smtp v0.25.1 hard-codes its reply), and the proxy goes on
// serving others.
func TestSMTPOversizeTokenLine(t *testing.T) {
	e := e2eGateSMTP(t)
	w := e.dialSMTPS(t, e.gate.smtps)
	w.ehlo()
	big := "AUTH OAUTHBEARER " + base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer "+strings.Repeat("x", 80<<10)+"\x01\x01"))
	w.logC(big)
	go func() { _, _ = w.conn.Write([]byte(big + "\r\n")) }()
	var last string
	for {
		line, err := w.readLine(wireTimeout)
		if err != nil {
			break // closed
		}
		last = line
	}
	if !strings.HasPrefix(last, "500 ") {
		t.Fatalf("a %d-byte AUTH line: last reply %q, want 500 and the connection closed", len(big), last)
	}
	// The proxy still serves others.
	w2 := e.dialSMTPS(t, e.gate.smtps)
	w2.ehlo()
	w2.send("AUTH OAUTHBEARER " + oauthBearerIR(mailFrom, "", 0, e.grantToken(t, "alice")))
	w2.expectReply("235 ")
}

// TestSMTPMalformedAuth: a response that is not base64 fails the exchange (go-smtp
// v0.25.1 hard-codes 454 4.7.0 where RFC 4954 §4 has 501), `*` cancels it (501), and
// the session goes on.
func TestSMTPMalformedAuth(t *testing.T) {
	e := e2eGateSMTP(t)
	w := e.dialSMTPS(t, e.gate.smtps)
	w.ehlo()
	w.send("AUTH OAUTHBEARER %%%not-base64%%%")
	w.expectReply("454 4.7.0 ")
	w.send("AUTH XOAUTH2")
	w.expect("334")
	w.send("*")
	w.expectReply("501 ")
	w.send("AUTH OAUTHBEARER " + oauthBearerIR(mailFrom, "", 0, e.grantToken(t, "alice")))
	w.expectReply("235 ")
}

// TestSMTPTranscript: a whole submission over the wire, then read back via IMAP.
func TestSMTPTranscript(t *testing.T) {
	e := e2eGateSMTP(t)
	msgID, msg := testMessage("raw transcript")
	w := e.dialSMTPS(t, e.gate.smtps)
	ext := w.ehlo()
	if mechs := strings.Fields(ext["AUTH"]); !containsAll(mechs, "OAUTHBEARER", "XOAUTH2") {
		t.Errorf("EHLO: AUTH %q, want OAUTHBEARER and XOAUTH2", ext["AUTH"])
	}
	w.send("AUTH OAUTHBEARER")
	w.expect("334")
	w.send(oauthBearerIR(mailFrom, "", 0, e.grantToken(t, "alice")))
	// go-smtp v0.25.1 answers 235 2.0.0 (RFC 4954 §6 has 2.7.0); clients read the 235.
	w.expectReply("235 ")
	w.send("MAIL FROM:<" + mailFrom + ">")
	w.expectReply("250 ")
	w.send("RCPT TO:<" + mailRcpt + ">")
	w.expectReply("250 ")
	w.send("DATA")
	w.expectReply("354 ")
	w.logC("<message, " + strconv.Itoa(len(msg)) + " bytes>")
	w.write(msg + ".\r\n")
	w.expectReply("250 ")
	w.send("QUIT")
	w.expectReply("221 ")
	checkDelivered(t, e.fetchDelivered(t, msgID), msg, mailFrom)
}

// TestSMTPClientVanishesMidDATA: a client that disconnects before the final dot must
// not get half a message delivered (RFC 5321 §4.1.1.4: the message is only accepted
// at the dot). Postfix logs the backend session ending mid-DATA; a complete message
// sent afterwards arrives, the broken one never does.
func TestSMTPClientVanishesMidDATA(t *testing.T) {
	e := e2eGateSMTP(t)
	lost := func() int { return strings.Count(tail(e.postfix.log, 1<<20), "lost connection after DATA") }
	before := lost()

	brokenID, broken := testMessage("vanishing client")
	w := e.dialSMTPS(t, e.gate.smtps)
	w.ehlo()
	w.send("AUTH OAUTHBEARER " + oauthBearerIR(mailFrom, "", 0, e.grantToken(t, "alice")))
	w.expectReply("235 ")
	w.send("MAIL FROM:<" + mailFrom + ">")
	w.expectReply("250 ")
	w.send("RCPT TO:<" + mailRcpt + ">")
	w.expectReply("250 ")
	w.send("DATA")
	w.expectReply("354 ")
	half := broken[:len(broken)-10]
	w.logC("<first " + strconv.Itoa(len(half)) + " bytes of the message, no final dot>, then close")
	w.write(half)
	time.Sleep(200 * time.Millisecond) // let the proxy relay what it has
	w.conn.Close()

	deadline := time.Now().Add(15 * time.Second)
	for lost() == before {
		if time.Now().After(deadline) {
			t.Fatal("Postfix did not log `lost connection after DATA` within 15s: saslgate kept the backend transaction open after its client vanished (or finished it)")
		}
		time.Sleep(100 * time.Millisecond)
	}

	okID, ok := testMessage("after a vanishing client")
	r := e.smtplib(t, smtplibRun{addr: e.gate.smtps, mode: "ssl", mech: "XOAUTH2", initialResponse: true,
		user: mailFrom, secret: e.grantToken(t, "alice"), msg: ok})
	if r.Error != "" {
		t.Fatalf("smtplib after the vanished client: %+v", r)
	}
	e.fetchDelivered(t, okID)
	for deadline := time.Now().Add(10 * time.Second); ; {
		empty, err := e.postfix.queueEmpty()
		if err != nil {
			t.Fatal(err)
		}
		if empty {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix queue not empty after 10s (see %s)", e.postfix.queueDir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got, err := e.searchBob(t, brokenID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got != "" {
		t.Fatalf("the message whose client vanished mid-DATA was delivered:\n%s", got)
	}
}

// writeFile0600 writes a file only this user can read (msmtp refuses others).
func writeFile0600(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
