package backends

import (
	"bufio"
	"bytes"
	"net/http"
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

// FuzzStaticMap: a map file never panics the parser, and every entry it accepts is a route
// the router can use: a key without control bytes, a pool name or a server SplitServer takes.
func FuzzStaticMap(f *testing.F) {
	f.Add("alice@example.com shard1\n@example.org mail3.internal:143 # c\n")
	f.Add("bob [2001:db8::1]:143\n\n# x\n")
	f.Add("a b c\nx\x00 y\n")
	f.Fuzz(func(t *testing.T, file string) {
		m, err := parseStaticMap(strings.NewReader(file), "f")
		if err != nil {
			return
		}
		for k, v := range m {
			if k == "" || strings.ContainsFunc(k, isControl) {
				t.Fatalf("key %q accepted", k)
			}
			a := Answer{Server: v}
			if validPoolName(v) {
				a = Answer{Pool: v}
			}
			if err := a.check(); err != nil {
				t.Fatalf("value %q accepted, then refused by the router: %v", v, err)
			}
		}
	})
}

// FuzzAuthHTTP: an auth_http answer never panics the parser, and a route it returns passes
// the router's check or is refused there, never carrying CR or LF to a dial or a login.
func FuzzAuthHTTP(f *testing.F) {
	f.Add("OK", "10.0.0.2", "143", "alice", "pw", "")
	f.Add("Invalid login", "", "", "", "", "")
	f.Add("OK", "", "", "", "", "shard")
	f.Add("OK", "[::1]", "993", "", "", "")
	f.Fuzz(func(t *testing.T, status, server, port, user, pass, pool string) {
		h := http.Header{}
		for k, v := range map[string]string{"Auth-Status": status, "Auth-Server": server, "Auth-Port": port, "Auth-User": user, "Auth-Pass": pass, "Auth-Pool": pool} {
			if v != "" {
				h.Set(k, v)
			}
		}
		a, found, err := parseAuthHTTP(200, h)
		if err != nil || !found {
			return
		}
		if a.check() != nil {
			return
		}
		if strings.ContainsAny(a.Server+a.User+a.Pool+a.Secret.Reveal(), "\r\n\x00") {
			t.Fatalf("answer %+v passed the check with CR, LF or NUL", a)
		}
		if a.Server != "" {
			if _, _, err := SplitServer(a.Server); err != nil {
				t.Fatalf("server %q passed the check: %v", a.Server, err)
			}
		}
	})
}
