package introspect

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

const maxUsernameLen = 255

// ValidUsername reports why s cannot be sent to a mail backend as a login name, or nil if it
// can. It rejects the empty string, more than 255 bytes, invalid UTF-8, control bytes (below
// 0x20 and 0x7f), SP, '"' and '\\': everything an IMAP quoted string, an SMTP AUTH PLAIN
// message or a log line could not carry unambiguously.
func ValidUsername(s string) error {
	if s == "" {
		return errors.New("introspect: username is empty")
	}
	if len(s) > maxUsernameLen {
		return fmt.Errorf("introspect: username is longer than %d bytes", maxUsernameLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("introspect: username is not valid UTF-8")
	}
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20 || b == 0x7f:
			return fmt.Errorf("introspect: username contains control byte 0x%02x", b)
		case b == ' ' || b == '"' || b == '\\':
			return fmt.Errorf("introspect: username contains %q", b)
		}
	}
	return nil
}

// usernamePolicy is a compiled UsernameConfig.
type usernamePolicy struct {
	lowercase    bool
	stripDomain  bool
	appendDomain string
	allowed      map[string]bool // lowercased; nil: any domain
}

func newUsernamePolicy(c UsernameConfig) usernamePolicy {
	p := usernamePolicy{lowercase: c.Lowercase, stripDomain: c.StripDomain, appendDomain: c.AppendDomain}
	if len(c.AllowedDomains) > 0 {
		p.allowed = make(map[string]bool, len(c.AllowedDomains))
		for _, d := range c.AllowedDomains {
			p.allowed[asciiLower(d)] = true
		}
	}
	return p
}

// apply maps a claim value to a username in the order documented on UsernameConfig.
func (p usernamePolicy) apply(s string) (string, error) {
	// Before any mapping: strings.ToLower would turn invalid UTF-8 into valid U+FFFD.
	if !utf8.ValidString(s) {
		return "", errors.New("introspect: username is not valid UTF-8")
	}
	if p.lowercase {
		s = asciiLower(s)
	}
	local, domain, hasDomain := cutLast(s, '@')
	if hasDomain && (local == "" || domain == "" || strings.IndexByte(local, '@') >= 0) {
		return "", errors.New("introspect: username is not of the form local@domain")
	}
	if p.allowed != nil && (!hasDomain || !p.allowed[asciiLower(domain)]) {
		return "", errors.New("introspect: username domain is not allowed")
	}
	if p.stripDomain && hasDomain {
		s, hasDomain = local, false
	}
	if p.appendDomain != "" && !hasDomain {
		s += "@" + p.appendDomain
	}
	if err := ValidUsername(s); err != nil {
		return "", err
	}
	return s, nil
}

func cutLast(s string, sep byte) (before, after string, found bool) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// asciiLower maps only A-Z; see UsernameConfig.Lowercase for why not strings.ToLower.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
