package introspect

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// claims are the members the policy reads, from a JWT's claims set, an introspection response
// (RFC 7662 §2.2) or a userinfo response alike.
type claims struct {
	Issuer    string       `json:"iss"`
	Subject   string       `json:"sub"`
	Audience  audience     `json:"aud"`
	Expiry    *numericDate `json:"exp"`
	NotBefore *numericDate `json:"nbf"`
	IssuedAt  *numericDate `json:"iat"`
	JTI       string       `json:"jti"`
	ClientID  string       `json:"client_id"`
	AZP       string       `json:"azp"`
	Scope     spaceList    `json:"scope"`
	Scp       spaceList    `json:"scp"`
	Cnf       struct {
		X5tS256 string `json:"x5t#S256"` // RFC 8705 §3.1
		JKT     string `json:"jkt"`      // RFC 9449 §6.1
	} `json:"cnf"`
}

// numericDate is "exp", "nbf" or "iat": a NumericDate, seconds since the epoch as a JSON
// number, integer or not (RFC 7519 §2; RFC 7662 §2.2 uses the same claims). A json.Number, and
// go-oidc's own time type, would also take a string holding a number ("exp": "1700000000"):
// that is not a NumericDate, and neither is a boolean, object or array, so any of them makes the
// claims malformed. null leaves the *numericDate nil, as if the claim were absent.
type numericDate float64

func (d *numericDate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	// encoding/json hands over one well-formed value, and only a number starts with '-' or a digit.
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return errors.New("introspect: exp, nbf or iat is not a JSON number (RFC 7519 §2 NumericDate)")
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil { // beyond float64's range
		return fmt.Errorf("introspect: exp, nbf or iat: %w", err)
	}
	*d = numericDate(f)
	return nil
}

// malformedClaims is the failure for claims that do not decode into claims; err says why.
func malformedClaims(err error) *Error {
	e := invalid("malformed claims")
	e.cause = err
	return e
}

// audience is "aud": one string or an array of strings (RFC 7519 §4.1.3).
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = []string{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	*a = l
	return nil
}

// spaceList is a space-separated string (scope, RFC 9068 §2.2.3 and RFC 7662 §2.2; scp as Azure
// AD sends it) or a JSON array of strings (scp as Okta sends it).
type spaceList []string

func (l *spaceList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = strings.Fields(s)
		return nil
	}
	var a []string
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*l = a
	return nil
}

// maxUnixTime is 9999-12-31T23:59:59Z: later times are clamped rather than overflowing int64.
const maxUnixTime = 253402300799

// accept applies the issuer's policy to what the token (JWT) or the issuer (introspection,
// userinfo) says about it, after its signature or "active" has been checked. Members that are
// absent are not checked, except "aud", the client allow-list, the username claim and the
// required scopes, which fail closed: in particular a missing "scope" never falls back to
// "aud" or to anything else.
func (is *issuer) accept(now time.Time, c *claims, all map[string]json.RawMessage, r Request) (Identity, *Error) {
	leeway := is.cfg.Leeway.D()
	var expiry time.Time
	if c.Expiry != nil {
		exp := float64(*c.Expiry)
		if float64(now.Add(-leeway).Unix()) > exp {
			return Identity{}, invalid("token expired")
		}
		expiry = time.Unix(int64(min(exp, maxUnixTime)), 0)
	}
	if c.NotBefore != nil {
		nbf := float64(*c.NotBefore)
		// Compared as floats: converting an absurd nbf to int64 could wrap into the past.
		if float64(now.Add(leeway).Unix()) < nbf {
			return Identity{}, invalid("token not yet valid")
		}
	}
	if _, ok := all["iss"]; ok && c.Issuer != is.cfg.Issuer {
		return Identity{}, invalid("issuer mismatch")
	}
	if !is.cfg.InsecureSkipAudienceCheck {
		if e := is.checkAudience(c.Audience, r.Protocol); e != nil {
			return Identity{}, e
		}
	}
	clientID := c.ClientID
	if clientID == "" {
		clientID = c.AZP
	}
	switch {
	case len(is.cfg.AllowedClientIDs) > 0:
		if !slices.Contains(is.cfg.AllowedClientIDs, clientID) {
			return Identity{}, invalid(fmt.Sprintf("client %.64q not allowed", clientID))
		}
	case is.cfg.AllowAnyClientID && len(is.cfg.Scopes[r.Protocol]) == 0:
		// Fail closed: with every client admitted, the scopes are the only statement that the
		// user let this client at their mail.
		return Identity{}, invalid(fmt.Sprintf("allow_any_client_id, but no scope is required for %.16q", r.Protocol))
	}
	// RFC 9449 §7.1: a DPoP-bound token is only good with a proof of possession, which SASL
	// cannot carry.
	if c.Cnf.JKT != "" {
		return Identity{}, invalid("token is DPoP-bound")
	}

	var name string
	if raw, ok := all[is.cfg.UsernameClaim]; !ok {
		return Identity{}, invalid("username claim " + is.cfg.UsernameClaim + " missing")
	} else if json.Unmarshal(raw, &name) != nil {
		return Identity{}, invalid("username claim " + is.cfg.UsernameClaim + " is not a string")
	}
	user, err := is.username.apply(name)
	if err != nil {
		e := invalid("unusable username")
		e.cause = err
		return Identity{}, e
	}

	scopes := append(slices.Clip([]string(c.Scope)), c.Scp...)
	for _, want := range is.cfg.Scopes[r.Protocol] {
		if !slices.Contains(scopes, want) {
			return Identity{}, &Error{
				Kind:   ErrInsufficientScope,
				Reason: fmt.Sprintf("scope %q missing for %s", want, r.Protocol),
				Scope:  is.scopeText[r.Protocol],
			}
		}
	}

	return Identity{
		User:           user,
		Subject:        c.Subject,
		Issuer:         is.cfg.Issuer,
		ClientID:       clientID,
		Scopes:         scopes,
		Audience:       c.Audience,
		Expiry:         expiry,
		CertThumbprint: c.Cnf.X5tS256,
	}, nil
}

// checkAudience accepts an "aud" that names this gateway for protocol: one of the issuer's
// Audience values, or one of the protocol's Resources (RFC 8707 §2: a token asked for with a
// resource indicator is restricted to that resource).
func (is *issuer) checkAudience(aud []string, protocol string) *Error {
	if slices.ContainsFunc(aud, func(a string) bool {
		return slices.Contains(is.cfg.Audience, a) || slices.Contains(is.cfg.Resources[protocol], a)
	}) {
		return nil
	}
	for _, a := range aud {
		if protos := is.resourceProtocols[a]; len(protos) > 0 {
			return invalid(fmt.Sprintf("audience mismatch: token is for resource %.128q of %s, not %.16s", a, strings.Join(protos, ", "), protocol))
		}
	}
	return invalid("audience mismatch")
}
