package backends

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

func FuzzParseResponse(f *testing.F) {
	for _, seed := range []string{
		"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot ready.",
		"* OK IMAP4rev1 Service Ready",
		"* PREAUTH IMAP4rev1 server logged in as Smith",
		"* BYE Autologout; idle for too long",
		"* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED",
		"a001 OK CAPABILITY completed",
		"a002 OK [CAPABILITY IMAP4rev2 IDLE] LOGIN completed",
		"A1 NO [AUTHENTICATIONFAILED] Authentication failed.",
		"A1 NO [UNAVAILABLE] Temporary authentication failure.",
		"A1 BAD Error in IMAP command",
		"+ ",
		"+",
		"+ Ready for additional command text",
		"* 172 EXISTS",
		"* 12 FETCH (FLAGS (\\Seen) BODY[HEADER] {342}",
		"* LIST () \"/\" {5}",
		"* OK [ALERT] System shutdown in 10 minutes",
		"* OK [UNSEEN 12] Message 12 is first unseen",
		"* OK [",
		"A1 OK [] x",
		"",
		" ",
		"\x00",
		"* ID (\"name\" {4}\r\nDove)\r\n",
		"* X {99999999999}\r\n",
		"] OK", // "]" is an ASTRING-CHAR, so a valid tag
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		// Arbitrary bytes as a stream, literals included: must not panic.
		_, _ = readResponse(bufio.NewReader(bytes.NewReader(line)))

		r, err := parseResponse(line)
		if err != nil || len(line) > maxResponseLen {
			if r != nil && err != nil {
				t.Fatalf("error %v with a response", err)
			}
			return
		}
		switch {
		case r.tag == "":
			t.Fatal("empty tag")
		case r.tag == "+":
			if r.kind != "" || r.code != "" {
				t.Fatalf("continuation with kind %q code %q", r.kind, r.code)
			}
		case r.kind == "" || strings.ContainsAny(r.tag, " \r\n+") || strings.ContainsAny(r.kind+r.code, " \r\n]"):
			t.Fatalf("bad tag %q kind %q code %q", r.tag, r.kind, r.code)
		case r.tag != "*" && r.kind != "OK" && r.kind != "NO" && r.kind != "BAD":
			t.Fatalf("tagged %q", r.kind)
		}
		if r.code != "" && !r.isStatus() {
			t.Fatalf("code %q on non-status %q", r.code, r.kind)
		}
		_ = postAuthCapabilities(capabilityFields(r.codeArg + " " + r.text))

		// The same bytes as a stream: bounded, never panics, never reads past one response.
		if bytes.ContainsAny(line, "\r\n") || !literalFree(line) {
			return
		}
		br := bufio.NewReader(bytes.NewReader(append(append([]byte{}, line...), "\r\nNEXT\r\n"...)))
		if _, err := readResponse(br); err != nil {
			t.Fatalf("readResponse failed on a line parseResponse accepts: %v", err)
		}
		if rest, _ := br.ReadString('\n'); rest != "NEXT\r\n" {
			t.Fatalf("readResponse consumed past the response: left %q", rest)
		}
	})
}

// literalFree reports whether readResponse would not treat line as announcing a literal.
func literalFree(line []byte) bool {
	r, err := parseResponse(line)
	if err != nil || r.tag != "*" || r.isStatus() {
		return true
	}
	_, lit := literalSuffix(line)
	return !lit
}
