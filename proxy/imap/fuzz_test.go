package imap

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzCommandReader feeds arbitrary client bytes to the pre-auth command
// reader: it must never panic, never return a command without a valid tag and
// name, and stop at the bounds.
func FuzzCommandReader(f *testing.F) {
	for _, seed := range []string{
		"a CAPABILITY\r\n",
		"a1 AUTHENTICATE OAUTHBEARER bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB\r\n",
		"a AUTHENTICATE XOAUTH2 =\r\n",
		`a ID ("name" "Thunderbird" "version" "115.0" "x" NIL)` + "\r\n",
		"a ID NIL\r\n",
		"a LOGIN {5}\r\nalice {3+}\r\npwd\r\n",
		"a LOGIN \"al\\\"ice\" \"p\\\\w\"\r\n",
		"a LOGIN {99999999}\r\n",
		"a LOGIN {3+}\r\nabc",
		"+ NOOP\r\n",
		"* NOOP\r\n",
		"a\r\n",
		"\r\n",
		"a NOOP\n",
		"a (\r\n",
		"a LOGIN \"unterminated\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r := &commandReader{
			br:         bufio.NewReaderSize(strings.NewReader(in), 16),
			maxLine:    256,
			maxLiteral: 64,
			ready:      func() error { return nil },
		}
		for i := 0; i < 32; i++ {
			cmd, err := r.read()
			var bad *badCommand
			switch {
			case errors.As(err, &bad):
				if bad.tag != "" && !validTag([]byte(bad.tag)) {
					t.Fatalf("bad command with invalid tag %q", bad.tag)
				}
				if errors.Is(err, errFatal) {
					return
				}
				continue
			case err != nil:
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !validTag([]byte(cmd.tag)) || cmd.name == "" || strings.ToUpper(cmd.name) != cmd.name {
				t.Fatalf("accepted command with tag %q name %q", cmd.tag, cmd.name)
			}
			for _, a := range cmd.args {
				if a.kind == tokString && len(a.s) > 64 && !strings.Contains(in, a.s) {
					t.Fatalf("string token of %d bytes over the literal bound", len(a.s))
				}
			}
		}
	})
}
