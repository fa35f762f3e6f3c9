package sievewire

import (
	"bytes"
	"slices"
	"testing"
)

func TestTokenize(t *testing.T) {
	for _, tc := range []struct {
		line  string
		items []Item
		n     int
		isLit bool
		bad   bool
	}{
		{line: `"IMPLEMENTATION" "Dovecot Pigeonhole"`, items: []Item{{'s', "IMPLEMENTATION"}, {'s', "Dovecot Pigeonhole"}}},
		{line: `"STARTTLS"`, items: []Item{{'s', "STARTTLS"}}},
		{line: `OK (SASL "a\"b\\") "done"`, items: []Item{{'a', "OK"}, {Kind: '('}, {'a', "SASL"}, {'s', `a"b\`}, {Kind: ')'}, {'s', "done"}}},
		{line: `NO {12}`, items: []Item{{'a', "NO"}}, n: 12, isLit: true},
		{line: `"SIEVE" {3+}`, items: []Item{{'s', "SIEVE"}}, n: 3, isLit: true},
		{line: `"a\q"`, bad: true},
		{line: "\"a\x00\"", bad: true},
		{line: `"open`, bad: true},
		{line: `{3} "after"`, bad: true},
		{line: `{}`, bad: true},
		{line: "OK \x01", bad: true},
		{line: `OK \`, bad: true},
	} {
		var items []Item
		n, rest, isLit, err := Tokenize([]byte(tc.line), &items)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error, items %v", tc.line, items)
			} else if !bytes.HasSuffix([]byte(tc.line), rest) || len(rest) == 0 {
				t.Errorf("%q: rest %q is not where it stopped", tc.line, rest)
			}
			continue
		}
		if err != nil || n != tc.n || isLit != tc.isLit || !slices.Equal(items, tc.items) {
			t.Errorf("%q: %v %d %v %v, want %v %d %v", tc.line, items, n, isLit, err, tc.items, tc.n, tc.isLit)
		}
	}
}

// FuzzTokenize feeds server lines to Tokenize: it never panics, an error says where it
// stopped, and a literal announcement ends the line.
func FuzzTokenize(f *testing.F) {
	for _, seed := range []string{
		`"IMPLEMENTATION" "Dovecot Pigeonhole"`,
		`"SASL" "PLAIN OAUTHBEARER"`,
		`"STARTTLS"`,
		`OK "Logged in."`,
		`NO (TRYLATER) "Try again"`,
		`BYE (REFERRAL "sieve://example.org") "go away"`,
		`OK (TAG {4}`,
		`"" {0+}`,
		`OK (SASL "dGVzdA==") "done"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var items []Item
		n, rest, isLit, err := Tokenize(line, &items)
		switch {
		case err != nil && !bytes.HasSuffix(line, rest):
			t.Fatalf("rest %q is not a suffix of the line", rest)
		case err == nil && isLit && !bytes.HasSuffix(line, []byte("}")):
			t.Fatalf("literal of %d announced by a line not ending in }", n)
		case err == nil && !isLit && n != 0:
			t.Fatalf("length %d without a literal", n)
		}
		for _, it := range items {
			if it.Kind == 'a' && (it.S == "" || !isAtom(it.S)) {
				t.Fatalf("bad atom %q", it.S)
			}
		}
	})
}

func isAtom(s string) bool {
	for i := range len(s) {
		if !IsAtomChar(s[i]) {
			return false
		}
	}
	return true
}
