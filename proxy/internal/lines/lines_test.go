package lines

import (
	"strings"
	"testing"
)

// feed runs t over in, in chunks of step bytes, and returns the heads of the lines that
// ended, one string each.
func feed(t *Tracker, in []byte, step int, bareLF bool) []string {
	var heads []string
	for i := 0; i < len(in); i += step {
		for p := in[i:min(i+step, len(in))]; len(p) > 0; {
			var head []byte
			var ended bool
			if p, head, ended = t.Next(p, bareLF); ended {
				heads = append(heads, string(head))
			}
		}
	}
	return heads
}

func TestTracker(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		bareLF   bool
		heads    []string // of the lines that ended
		open     bool
		literal  int64
	}{
		{"empty", "", false, nil, false, 0},
		{"one line", "* OK IDLE accepted\r\n", false, []string{"* OK I"}, false, 0},
		{"short lines", "OK\r\n+\r\n", false, []string{"OK\r\n", "+\r\n"}, false, 0},
		{"half a line", "* 3 EXI", false, nil, true, 0},
		{"CR only", "* 3 EXISTS\r", false, nil, true, 0},
		{"literal announced", "* 1 FETCH (BODY[] {5}\r\n", false, nil, true, 5},
		{"inside the literal", "* 1 FETCH (BODY[] {5}\r\nhel", false, nil, true, 2},
		{"literal data looks like a line end", "* 1 FETCH (BODY[] {13}\r\nab\r\n{3}\r\nxy\r\n", false, nil, true, 0},
		{"literal done, line open", "* 1 FETCH (BODY[] {5}\r\nhello", false, nil, true, 0},
		{"literal and line done", "* 1 FETCH (BODY[] {5}\r\nhello)\r\n", false, []string{"* 1 FE"}, false, 0},
		{"two literals in one line", "* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {3}\r\nxyz)\r\nA1 OK\r\n", false, []string{"* 1 FE", "A1 OK\r"}, false, 0},
		{"literal8", "* 1 FETCH (BINARY[] ~{2}\r\n\x00\x01)\r\n", false, []string{"* 1 FE"}, false, 0},
		{"zero literal", "* 1 FETCH (BODY[] {0}\r\n)\r\n", false, []string{"* 1 FE", ")\r\n"}, false, 0},
		{"brace text", "* OK [ALERT] {not a literal}\r\n", false, []string{"* OK ["}, false, 0},
		{"18 digits", "* OK {999999999999999999}\r\n", false, nil, true, 999999999999999999},
		{"19 digits", "* OK {1234567890123456789}\r\n", false, []string{"* OK {"}, false, 0},
		{"long line then literal", "* 1 FETCH (" + strings.Repeat("X", 5000) + " {4}\r\nabcd)\r\n", false, []string{"* 1 FE"}, false, 0},
		{"bare LF literal refused", "{3}\nab\nOK\r\n", false, []string{"{3}\n", "ab\n", "OK\r\n"}, false, 0},
		// The head of a line counts its bytes after a literal.
		{"bare LF literal", "{3}\nab\nOK\r\n", true, []string{"{3}\nOK"}, false, 0},
		{"bare LF literal, line open", "{3}\nab\nOK", true, nil, true, 0},
		{"bare LF literal done", "{3}\nab\n\r\nOK\r\n", true, []string{"{3}\n\r\n", "OK\r\n"}, false, 0},
	} {
		in := []byte(tc.in)
		for step := 1; step <= max(1, len(in)); step++ {
			var tr Tracker
			heads := feed(&tr, in, step, tc.bareLF)
			if strings.Join(heads, "|") != strings.Join(tc.heads, "|") || tr.Open() != tc.open || tr.Literal() != tc.literal {
				t.Errorf("%s, chunks of %d: heads %q, open %v, literal %d; want %q, %v, %d",
					tc.name, step, heads, tr.Open(), tr.Literal(), tc.heads, tc.open, tc.literal)
				break
			}
		}
	}
}

// FuzzTracker: how the server's bytes are chunked never changes which lines end, their
// heads, or where the output stands.
func FuzzTracker(f *testing.F) {
	f.Add([]byte("* 1 FETCH (BODY[] {5}\r\nhello)\r\nA1 OK done\r\n"), 7, false)
	f.Add([]byte("* OK {12}\r\n{3}\r\nabc\r\nxyz\r\n"), 3, false)
	f.Add([]byte("\"a\" ACTIVE\r\n{5}\nhello\r\nOK\r\n"), 2, true)
	f.Fuzz(func(t *testing.T, in []byte, step int, bareLF bool) {
		var whole, chunked Tracker
		a := feed(&whole, in, max(1, len(in)), bareLF)
		b := feed(&chunked, in, max(1, step%64+1), bareLF)
		if strings.Join(a, "\x00|") != strings.Join(b, "\x00|") || whole.Open() != chunked.Open() || whole.Literal() != chunked.Literal() {
			t.Fatalf("whole: %q open %v literal %d; chunked: %q open %v literal %d",
				a, whole.Open(), whole.Literal(), b, chunked.Open(), chunked.Literal())
		}
		for _, h := range a {
			if len(h) == 0 || len(h) > len(whole.head) {
				t.Fatalf("head %q: want 1 to %d bytes", h, len(whole.head))
			}
		}
	})
}
