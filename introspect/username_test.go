package introspect

import (
	"strings"
	"testing"
)

func TestValidUsername(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" valid, else substring of the error
	}{
		{"alice@example.com", ""},
		{"smith,alice", ""},
		{"jürgen@example.com", ""},
		{"a+tag@example.com", ""},
		{strings.Repeat("a", 255), ""},
		{"", "empty"},
		{strings.Repeat("a", 256), "longer than 255"},
		{"alice\r\n", "control byte 0x0d"},
		{"al\nice", "control byte 0x0a"},
		{"alice\x00", "control byte 0x00"},
		{"alice\t", "control byte 0x09"},
		{"alice\x7f", "control byte 0x7f"},
		{"alice smith", `' '`},
		{`"alice"`, `'"'`},
		{`alice\`, `'\\'`},
		{"alice\xff", "UTF-8"},
		{"alice\xc3", "UTF-8"},
	}
	for _, tt := range tests {
		err := ValidUsername(tt.in)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidUsername(%q) = %v", tt.in, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidUsername(%q) = %v, want error with %q", tt.in, err, tt.want)
		}
	}
}

func TestUsernamePolicy(t *testing.T) {
	tests := []struct {
		name string
		cfg  UsernameConfig
		in   string
		want string // expected username, or "!reason" for an error
	}{
		{"as is", UsernameConfig{}, "Alice@Example.COM", "Alice@Example.COM"},
		{"lowercase", UsernameConfig{Lowercase: true}, "Alice@Example.COM", "alice@example.com"},
		{"lowercase is ASCII only", UsernameConfig{Lowercase: true}, "\u212Aate@Example.com", "\u212Aate@example.com"},
		{"lowercase keeps non-ASCII", UsernameConfig{Lowercase: true}, "JÜRGEN@x.de", "jÜrgen@x.de"},
		{"strip", UsernameConfig{StripDomain: true}, "alice@example.com", "alice"},
		{"strip without domain", UsernameConfig{StripDomain: true}, "alice", "alice"},
		{"append", UsernameConfig{AppendDomain: "example.com"}, "alice", "alice@example.com"},
		{"append keeps existing domain", UsernameConfig{AppendDomain: "example.com"}, "alice@example.org", "alice@example.org"},
		{"replace", UsernameConfig{StripDomain: true, AppendDomain: "mail.example.com"}, "alice@example.com", "alice@mail.example.com"},
		{"allowed", UsernameConfig{AllowedDomains: []string{"Example.com"}}, "alice@EXAMPLE.com", "alice@EXAMPLE.com"},
		{"allowed then strip", UsernameConfig{AllowedDomains: []string{"example.com"}, StripDomain: true}, "alice@example.com", "alice"},
		{"not allowed", UsernameConfig{AllowedDomains: []string{"example.com"}}, "alice@example.org", "!not allowed"},
		{"subdomain not allowed", UsernameConfig{AllowedDomains: []string{"example.com"}}, "alice@evil.example.com", "!not allowed"},
		{"allowed needs a domain", UsernameConfig{AllowedDomains: []string{"example.com"}, AppendDomain: "example.com"}, "alice", "!not allowed"},
		{"allowed is not Unicode-folded", UsernameConfig{AllowedDomains: []string{"kk.example"}}, "a@\u212Ak.example", "!not allowed"},
		{"two @", UsernameConfig{}, "bob@example.com@example.com", "!local@domain"},
		{"two @ stripped", UsernameConfig{StripDomain: true, AllowedDomains: []string{"example.com"}}, "bob@evil.com@example.com", "!local@domain"},
		{"empty local", UsernameConfig{}, "@example.com", "!local@domain"},
		{"empty domain", UsernameConfig{}, "alice@", "!local@domain"},
		{"empty", UsernameConfig{}, "", "!empty"},
		{"invalid UTF-8 before lowercase", UsernameConfig{Lowercase: true}, "ALICE\xff", "!UTF-8"},
		{"invalid after mapping", UsernameConfig{AppendDomain: "example.com"}, "alice\r\n", "!control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newUsernamePolicy(tt.cfg).apply(tt.in)
			if reason, ok := strings.CutPrefix(tt.want, "!"); ok {
				if err == nil || !strings.Contains(err.Error(), reason) {
					t.Fatalf("apply(%q) = %q, %v; want error with %q", tt.in, got, err, reason)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("apply(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}
