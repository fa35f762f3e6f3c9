package introspect

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// validateJWT checks a JWT access token with the issuer's keys (RFC 9068 §4), then its policy.
// jws was parsed with the issuer's algorithms only.
func (is *issuer) validateJWT(ctx context.Context, now time.Time, jws *jose.JSONWebSignature, r Request) (Identity, *Error) {
	h := jws.Signatures[0].Header
	// RFC 9068 §4: typ "at+jwt" or "application/at+jwt", compared case-insensitively.
	if is.cfg.RequireATJWT {
		typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
		if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
			return Identity{}, invalid("typ is not at+jwt")
		}
	}

	call := &verifyCall{jws: jws}
	tok, err := is.verifier.Verify(context.WithValue(ctx, verifyCallKey{}, call), r.Token)
	if err != nil {
		var expired *oidc.TokenExpiredError
		switch {
		case call.err != nil:
			return Identity{}, call.err
		case errors.As(err, &expired):
			return Identity{}, invalid("token expired")
		default:
			e := invalid("rejected by verifier")
			e.cause = err
			return Identity{}, e
		}
	}

	var c claims
	var all map[string]json.RawMessage
	if err := tok.Claims(&c); err != nil {
		return Identity{}, malformedClaims(err)
	}
	if err := tok.Claims(&all); err != nil {
		return Identity{}, malformedClaims(err)
	}
	// RFC 9068 §2.2 required claims (iss, exp and aud are checked by the verifier and accept).
	if is.cfg.RequireATJWT && (c.Subject == "" || c.ClientID == "" || c.IssuedAt == nil || c.JTI == "") {
		return Identity{}, invalid("missing one of sub, client_id, iat, jti (RFC 9068 §2.2)")
	}
	return is.accept(now, &c, all, r)
}
