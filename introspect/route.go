package introspect

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxHeaderSize bounds a JWT's encoded JOSE header before it is decoded: real headers are a
// few hundred bytes, a few KiB with an x5c chain.
const maxHeaderSize = 16 << 10

// validate routes the token: a JWS compact serialization to the issuer its (not yet verified)
// "iss" names, anything else to the issuers in mode "introspection" or "userinfo".
func (v *Validator) validate(ctx context.Context, r Request) (Identity, error) {
	if v.testHookValidate != nil {
		v.testHookValidate()
	}
	now := v.now()
	h, rest, _ := strings.Cut(r.Token, ".")
	payload, sig, twoDots := strings.Cut(rest, ".")
	if !twoDots || strings.IndexByte(sig, '.') >= 0 {
		return v.validateOpaque(ctx, now, r)
	}
	if len(h) > maxHeaderSize {
		return Identity{}, v.fail(nil, invalid("JOSE header too large"))
	}
	// RFC 7515 §7.1: the first part of a JWS is a base64url-encoded JSON object. Three parts
	// without one are an opaque token that happens to hold two dots.
	if header, err := base64.RawURLEncoding.DecodeString(h); err != nil || len(header) == 0 || header[0] != '{' {
		return v.validateOpaque(ctx, now, r)
	}
	claimsJSON, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Identity{}, v.fail(nil, invalid("malformed JWT"))
	}
	var peek struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(claimsJSON, &peek) != nil {
		return Identity{}, v.fail(nil, invalid("malformed claims"))
	}
	is := v.issuers[peek.Issuer]
	if is == nil {
		return Identity{}, v.fail(nil, invalid("unknown issuer"))
	}
	if is.cfg.Mode != modeJWT {
		// A JWT of an issuer in mode introspection or userinfo is that issuer's to judge.
		id, _, e := is.check(ctx, now, r)
		if e != nil {
			return Identity{}, v.fail(is, e)
		}
		return id, nil
	}
	// Only this issuer's algorithms: HS* and "none" are never among them (Config.Validate), so
	// they are refused before any key is looked at (no HMAC keyed with a public key), and a
	// token is only ever verified with the keys of the issuer it names.
	jws, err := jose.ParseSignedCompact(r.Token, is.algs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return Identity{}, v.fail(is, invalid(fmt.Sprintf("algorithm %.16q not allowed for this issuer", alg.Got)))
		}
		return Identity{}, v.fail(is, invalid("malformed JWT"))
	}
	id, e := is.validateJWT(ctx, now, jws, r)
	if e != nil {
		return Identity{}, v.fail(is, e)
	}
	return id, nil
}

// validateOpaque offers a token that is not a JWT to the introspection and userinfo issuers in
// config order. The first that knows the token decides; if none does, the token is invalid,
// unless an issuer could not answer: then it may be that one's, and the failure is temporary.
func (v *Validator) validateOpaque(ctx context.Context, now time.Time, r Request) (Identity, error) {
	if len(v.opaque) == 0 {
		return Identity{}, v.fail(nil, invalid("malformed JWT"))
	}
	if !isB64Token(r.Token) {
		return Identity{}, v.fail(nil, invalid("malformed token"))
	}
	var temp, last *Error
	for _, is := range v.opaque {
		id, known, e := is.check(ctx, now, r)
		switch {
		case e == nil:
			return id, nil
		case known:
			return Identity{}, v.fail(is, e)
		case errors.Is(e, ErrTemporary):
			if temp == nil {
				temp = v.fail(is, e)
			}
		default:
			last = v.fail(is, e)
		}
	}
	if temp != nil {
		return Identity{}, temp
	}
	if len(v.opaque) > 1 {
		last = v.fail(nil, invalid("no issuer knows the token"))
	}
	return Identity{}, last
}

// check asks an issuer in mode introspection or userinfo about the token.
func (is *issuer) check(ctx context.Context, now time.Time, r Request) (Identity, bool, *Error) {
	// RFC 6750 §2.1: a bearer token is a b64token. Anything else is refused here, not sent:
	// in a header it would make the request fail, which would read as a temporary failure.
	if !isB64Token(r.Token) {
		return Identity{}, false, invalid("malformed token")
	}
	if is.cfg.Mode == modeUserinfo {
		return is.userinfo(ctx, now, r)
	}
	return is.introspect(ctx, now, r)
}

// isB64Token reports whether s matches RFC 6750 §2.1's
// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}
