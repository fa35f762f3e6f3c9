package introspect

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// SharedCache is a store the replicas of a fleet share (internal/shared's Store is one). The
// Validator keeps the results of introspection and userinfo there besides its own cache, so
// an identity provider sees one request per token and TTL for the whole fleet. JWT results
// stay local: checking a signature is cheaper than a round trip. Every error means "not
// shared this time": the Validator goes on with its own cache and the identity provider.
type SharedCache interface {
	// Get returns the value stored under key, or nil and no error when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
}

// WithSharedCache shares introspection and userinfo results through c. It has no effect when
// the cache is disabled.
func WithSharedCache(c SharedCache) Option { return func(v *Validator) { v.shared = c } }

// Shared entries. The key is a hash of the token and the protocol, never the token. The value
// is sealed with AES-256-GCM under a key derived from the token itself, with the store key as
// additional data: whoever reads the store learns nothing of an entry without its token, and
// cannot forge one for a token they do not hold or move one to another key. An entry that
// does not open, or does not decode to exactly one result of an issuer configured here in
// mode introspection or userinfo, is ignored and the token checked as if there were none.
const (
	sharedVersion  = 1
	maxSharedEntry = 16 << 10
	sharedKeyLabel = "saslgate shared validation cache v1"
)

// sharedEntry is the sealed value's plaintext. Times are Unix nanoseconds (0: zero time).
type sharedEntry struct {
	Until     int64    `json:"until"`
	Mode      string   `json:"mode"`
	User      string   `json:"user,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Scopes    []string `json:"scopes,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Expiry    int64    `json:"exp,omitempty"`
	X5t       string   `json:"x5t,omitempty"`
	Kind      string   `json:"kind,omitempty"` // "" success, else errorKinds
	Reason    string   `json:"reason,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	Discovery string   `json:"discovery,omitempty"`
}

var errorKinds = map[string]error{"invalid_token": ErrInvalidToken, "insufficient_scope": ErrInsufficientScope}

func sharedKey(key cacheKey) string {
	return "val:" + hex.EncodeToString(key.sum[:]) + ":" + key.protocol
}

func sealKey(token string) []byte {
	m := hmac.New(sha256.New, []byte(sharedKeyLabel))
	m.Write([]byte(token))
	return m.Sum(nil)
}

func newGCM(token string) cipher.AEAD {
	b, _ := aes.NewCipher(sealKey(token)) // 32 bytes: never fails
	g, _ := cipher.NewGCM(b)
	return g
}

// sharesResult reports whether a token goes to an issuer in mode introspection or userinfo
// (the routing of validate, without checking anything), so that JWTs cost no store call.
func (v *Validator) sharesResult(token string) bool {
	if len(v.opaque) == 0 {
		return false
	}
	h, rest, _ := strings.Cut(token, ".")
	payload, sig, twoDots := strings.Cut(rest, ".")
	if !twoDots || strings.IndexByte(sig, '.') >= 0 || len(h) > maxHeaderSize {
		return true
	}
	if header, err := base64.RawURLEncoding.DecodeString(h); err != nil || len(header) == 0 || header[0] != '{' {
		return true
	}
	claims, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return false
	}
	var peek struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(claims, &peek) != nil {
		return false
	}
	is := v.issuers[peek.Issuer]
	return is != nil && is.cfg.Mode != modeJWT
}

// sharedGet returns the shared result for key, if there is a valid one.
func (v *Validator) sharedGet(ctx context.Context, token string, key cacheKey) (cacheEntry, bool) {
	sk := sharedKey(key)
	b, err := v.shared.Get(ctx, sk)
	if err != nil || b == nil {
		return cacheEntry{}, false
	}
	e, ok := v.openShared(token, sk, b, v.now())
	return e, ok
}

// openShared decodes a shared value, or refuses it.
func (v *Validator) openShared(token, sk string, b []byte, now time.Time) (cacheEntry, bool) {
	g := newGCM(token)
	if len(b) > maxSharedEntry || len(b) < 1+g.NonceSize()+g.Overhead() || b[0] != sharedVersion {
		return cacheEntry{}, false
	}
	nonce, sealed := b[1:1+g.NonceSize()], b[1+g.NonceSize():]
	plain, err := g.Open(nil, nonce, sealed, []byte(sk))
	if err != nil {
		return cacheEntry{}, false
	}
	var se sharedEntry
	d := json.NewDecoder(bytes.NewReader(plain))
	d.DisallowUnknownFields()
	if d.Decode(&se) != nil || d.More() {
		return cacheEntry{}, false
	}
	if se.Mode != modeIntrospection && se.Mode != modeUserinfo {
		return cacheEntry{}, false
	}
	until := time.Unix(0, se.Until)
	if !now.Before(until) {
		return cacheEntry{}, false
	}
	if se.Kind == "" {
		is := v.issuers[se.Issuer]
		if is == nil || is.cfg.Mode != se.Mode || se.User == "" || strings.ContainsAny(se.User, "\r\n\x00") {
			return cacheEntry{}, false
		}
		id := Identity{
			User: se.User, Subject: se.Subject, Issuer: se.Issuer, ClientID: se.ClientID,
			Scopes: se.Scopes, Audience: se.Audience, CertThumbprint: se.X5t,
		}
		if se.Expiry != 0 {
			id.Expiry = time.Unix(0, se.Expiry)
			if !now.Before(id.Expiry) {
				return cacheEntry{}, false
			}
			until = minTime(until, id.Expiry)
		}
		// This replica's TTL bounds what it accepts, whatever another one was configured with.
		return cacheEntry{result{id: id}, minTime(until, now.Add(v.ttl))}, true
	}
	kind, ok := errorKinds[se.Kind]
	if !ok {
		return cacheEntry{}, false
	}
	e := &Error{Kind: kind, Reason: se.Reason, Scope: se.Scope, Discovery: se.Discovery, mode: se.Mode}
	return cacheEntry{result{err: e}, minTime(until, now.Add(v.negTTL))}, true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sharedPut stores a result an issuer in mode introspection or userinfo decided until until.
func (v *Validator) sharedPut(ctx context.Context, token string, key cacheKey, id Identity, err error, until time.Time) {
	now := v.now()
	ttl := until.Sub(now)
	if ttl <= 0 {
		return
	}
	se := sharedEntry{Until: until.UnixNano()}
	if err == nil {
		is := v.issuers[id.Issuer]
		if is == nil || (is.cfg.Mode != modeIntrospection && is.cfg.Mode != modeUserinfo) {
			return
		}
		se.Mode = is.cfg.Mode
		se.User, se.Subject, se.Issuer, se.ClientID = id.User, id.Subject, id.Issuer, id.ClientID
		se.Scopes, se.Audience, se.X5t = id.Scopes, id.Audience, id.CertThumbprint
		if !id.Expiry.IsZero() {
			se.Expiry = id.Expiry.UnixNano()
		}
	} else {
		var e *Error
		if !errors.As(err, &e) || (e.mode != modeIntrospection && e.mode != modeUserinfo) {
			return
		}
		for name, k := range errorKinds {
			if e.Kind == k {
				se.Kind = name
			}
		}
		if se.Kind == "" {
			return
		}
		se.Mode, se.Reason, se.Scope, se.Discovery = e.mode, e.Reason, e.Scope, e.Discovery
	}
	plain, jerr := json.Marshal(se)
	if jerr != nil {
		return
	}
	g := newGCM(token)
	sk := sharedKey(key)
	b := make([]byte, 1+g.NonceSize(), 1+g.NonceSize()+len(plain)+g.Overhead())
	b[0] = sharedVersion
	rand.Read(b[1:])
	b = g.Seal(b, b[1:], plain, []byte(sk))
	if len(b) > maxSharedEntry {
		return
	}
	v.shared.Set(ctx, sk, b, ttl)
}
