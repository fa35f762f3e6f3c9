package backends

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxResponseLen bounds one backend response line, literals of untagged data included.
const maxResponseLen = 64 << 10

var errLineTooLong = fmt.Errorf("response line longer than %d bytes", maxResponseLen)

// response is one backend response line (RFC 9051 §7): a status response, untagged data
// or a continuation request.
type response struct {
	tag     string // "*" untagged, "+" continuation request, else a command tag
	kind    string // upper case: OK, NO, BAD, BYE, PREAUTH, or the untagged data keyword; "" for "+"
	code    string // upper-case response code atom ("CAPABILITY", "UNAVAILABLE"), "" if none
	codeArg string // the rest of the bracketed response code
	text    string // human-readable text, or the data after an untagged keyword
}

// isStatus reports whether r is a status response (resp-cond-state, -bye or -auth).
func (r *response) isStatus() bool {
	switch r.kind {
	case "OK", "NO", "BAD", "BYE", "PREAUTH":
		return true
	}
	return false
}

// isAtomChar reports whether b is an ATOM-CHAR (RFC 9051 §9).
func isAtomChar(b byte) bool {
	if b <= 0x20 || b >= 0x7f {
		return false
	}
	switch b {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// parseResponse parses one response line without its CRLF.
func parseResponse(line []byte) (*response, error) {
	if bytes.IndexByte(line, 0) >= 0 {
		return nil, errors.New("NUL in response")
	}
	if len(line) > 0 && line[0] == '+' {
		// continue-req = "+" SP (resp-text / base64); some servers omit the SP on an empty one.
		if len(line) > 1 && line[1] != ' ' {
			return nil, errors.New("malformed continuation request")
		}
		r := &response{tag: "+"}
		if len(line) > 2 {
			r.text = string(line[2:])
		}
		return r, nil
	}
	tag, rest, _ := bytes.Cut(line, []byte(" "))
	if len(tag) == 0 {
		return nil, errors.New("missing tag")
	}
	if !(len(tag) == 1 && tag[0] == '*') {
		// tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR adds "]" to ATOM-CHAR.
		for _, b := range tag {
			if b != ']' && !isAtomChar(b) || b == '+' {
				return nil, errors.New("malformed tag")
			}
		}
	}
	kind, rest, _ := bytes.Cut(rest, []byte(" "))
	if tag[0] == '*' && len(kind) > 0 && kind[0] >= '0' && kind[0] <= '9' {
		// message-data = nz-number SP ("EXPUNGE" / "FETCH" ...), mailbox-data "n EXISTS".
		if _, err := strconv.ParseUint(string(kind), 10, 32); err != nil {
			return nil, errors.New("malformed number in untagged response")
		}
		kind, rest, _ = bytes.Cut(rest, []byte(" "))
	}
	if len(kind) == 0 {
		return nil, errors.New("missing response keyword")
	}
	for _, b := range kind {
		if !isAtomChar(b) {
			return nil, errors.New("malformed response keyword")
		}
	}
	r := &response{tag: string(tag), kind: strings.ToUpper(string(kind))}
	if !r.isStatus() {
		if r.tag != "*" {
			return nil, fmt.Errorf("tagged response %.20q is not OK, NO or BAD", r.kind)
		}
		r.text = string(rest)
		return r, nil
	}
	if r.tag != "*" && (r.kind == "BYE" || r.kind == "PREAUTH") {
		return nil, fmt.Errorf("tagged %s", r.kind)
	}
	// resp-text = ["[" resp-text-code "]" SP] [text]
	if len(rest) > 0 && rest[0] == '[' {
		end := bytes.IndexByte(rest, ']')
		if end < 0 {
			return nil, errors.New("unterminated response code")
		}
		code, arg, _ := bytes.Cut(rest[1:end], []byte(" "))
		if len(code) == 0 {
			return nil, errors.New("empty response code")
		}
		for _, b := range code {
			if !isAtomChar(b) {
				return nil, errors.New("malformed response code")
			}
		}
		r.code, r.codeArg = strings.ToUpper(string(code)), string(arg)
		rest = bytes.TrimPrefix(rest[end+1:], []byte(" "))
	}
	r.text = string(rest)
	return r, nil
}

// readLine reads one CRLF- (or LF-) terminated line of at most max bytes, without the
// terminator. It reads no further than the line, so pipelined bytes stay in r.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	line = line[:len(line)-1]
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

// literalSuffix returns n when line ends with a literal announcement "{n}" (or "{n+}").
func literalSuffix(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false
	}
	digits := bytes.TrimSuffix(line[open+1:len(line)-1], []byte("+"))
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || n < 0 || len(digits) == 0 || digits[0] == '+' || digits[0] == '-' {
		return 0, false
	}
	return n, true
}

// readResponse reads one response. Untagged data may carry literals ("* LIST ... {5}"): their
// bytes and the rest of the response are skipped within the same maxResponseLen budget; only
// the first line is parsed, which is all the login needs.
func readResponse(r *bufio.Reader) (*response, error) {
	line, err := readLine(r, maxResponseLen)
	if err != nil {
		return nil, err
	}
	resp, err := parseResponse(line)
	if err != nil {
		return nil, fmt.Errorf("%w: %.80q", err, line)
	}
	if resp.tag != "*" || resp.isStatus() {
		return resp, nil
	}
	budget := int64(maxResponseLen - len(line))
	for {
		n, ok := literalSuffix(line)
		if !ok {
			return resp, nil
		}
		if n > budget {
			return nil, errLineTooLong
		}
		if _, err := io.CopyN(io.Discard, r, n); err != nil {
			return nil, err
		}
		budget -= n
		if line, err = readLine(r, int(budget)); err != nil {
			return nil, err
		}
		budget -= int64(len(line))
	}
}

// capabilityFields splits a capability list (RFC 9051 §7.2.2).
func capabilityFields(s string) []string { return strings.Fields(s) }

// preAuthOnly lists capabilities that describe the not-authenticated state and must not be
// passed on after login (SPECS.md: "never its pre-auth AUTH=/LOGINDISABLED").
var preAuthOnly = map[string]bool{"LOGINDISABLED": true, "STARTTLS": true, "SASL-IR": true}

// postAuthCapabilities drops AUTH=*, LOGINDISABLED, STARTTLS and SASL-IR.
func postAuthCapabilities(caps []string) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		u := strings.ToUpper(c)
		if strings.HasPrefix(u, "AUTH=") || preAuthOnly[u] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// hasCapability reports whether caps contains c, case-insensitively.
func hasCapability(caps []string, c string) bool {
	for _, x := range caps {
		if strings.EqualFold(x, c) {
			return true
		}
	}
	return false
}
