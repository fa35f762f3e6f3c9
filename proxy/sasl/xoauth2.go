package sasl

import (
	"unicode/utf8"

	gosasl "github.com/emersion/go-sasl"
)

// ParseXOAuth2 parses one XOAUTH2 client message, already base64-decoded, in
// the form Google and Microsoft document:
//
//	"user=" user kvsep "auth=Bearer " token kvsep kvsep
//
// The kvpair syntax is that of RFC 7628 §3.1 and the auth value that of
// RFC 6750 §2.1. Like Google, the parser accepts the pairs in any order and
// ignores unknown ones; user is optional. There is no GS2 header, so CBFlag
// is 'n'.
func ParseXOAuth2(msg []byte) (Credentials, error) {
	if len(msg) == 0 {
		return Credentials{}, malformed("message is empty")
	}
	c := Credentials{Mechanism: XOAuth2, CBFlag: 'n'}
	var seenUser, seenAuth bool
	for p := msg; ; {
		key, val, rest, err := cutKVPair(p)
		if err != nil {
			return Credentials{}, err
		}
		if key == nil {
			break
		}
		p = rest
		switch string(key) {
		case "user":
			if seenUser {
				return Credentials{}, malformed("kvpair user appears twice")
			}
			seenUser = true
			// No grammar to follow: a mailbox name, possibly internationalised
			// (RFC 6531), so UTF-8 but no control characters.
			if !isUser(val) {
				return Credentials{}, malformed("user is not UTF-8 without control characters")
			}
			c.AuthzID = string(val)
		case "auth":
			if seenAuth {
				return Credentials{}, malformed("kvpair auth appears twice")
			}
			seenAuth = true
			if c.Token, err = parseBearer(val); err != nil {
				return Credentials{}, err
			}
		}
	}
	if !seenAuth {
		return Credentials{}, malformed("auth kvpair is missing")
	}
	return c, nil
}

func isUser(v []byte) bool {
	for _, b := range v {
		if b < 0x20 || b == 0x7f {
			return false
		}
	}
	return utf8.Valid(v)
}

// EncodeXOAuth2 returns the raw (not base64) XOAUTH2 client message for user
// and token, for tests, probe tools and the backend login "token" (backends).
func EncodeXOAuth2(user, token string) []byte {
	b := make([]byte, 0, len("user=\x01auth=Bearer \x01\x01")+len(user)+len(token))
	b = append(b, "user="...)
	b = append(b, user...)
	b = append(b, "\x01auth=Bearer "...)
	b = append(b, token...)
	return append(b, kvsep, kvsep)
}

// NewXOAuth2 returns the server side of one XOAUTH2 exchange that checks the
// client's credentials with auth, which must not be nil. A *Failure is sent as
// XOAUTH2's error challenge, {"status":"401","schemes":"bearer","scope":…},
// with 400 for invalid_request and 403 for insufficient_scope (RFC 6750 §3.1).
// The server is for one exchange and one goroutine.
func NewXOAuth2(auth Authenticator) gosasl.Server {
	return newServer(auth, ParseXOAuth2, (*Failure).xoauth2JSON, false)
}
