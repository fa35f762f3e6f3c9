package introspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// introspect asks the issuer's RFC 7662 endpoint about r.Token. known reports that the endpoint
// said the token is active: the policy's verdict on it is then final, and no other issuer is
// asked.
func (is *issuer) introspect(ctx context.Context, now time.Time, r Request) (id Identity, known bool, e *Error) {
	u, e := is.endpoint.get(ctx)
	if e != nil {
		return Identity{}, false, e
	}
	// RFC 7662 §2.1.
	form := url.Values{"token": {r.Token}, "token_type_hint": {"access_token"}}
	if is.cfg.ClientAuth == clientSecretPost {
		form.Set("client_id", is.cfg.ClientID)
		form.Set("client_secret", string(is.secret))
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return Identity{}, false, temporary("introspection request", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if is.cfg.ClientAuth == clientSecretBasic {
		// RFC 6749 §2.3.1: both are form-urlencoded before going into the Basic credentials.
		req.SetBasicAuth(url.QueryEscape(is.cfg.ClientID), url.QueryEscape(string(is.secret)))
	}
	resp, err := is.http.request(ctx, is.http.direct, req, IdPIntrospection)
	if err != nil {
		return Identity{}, false, temporary("introspection failed", err)
	}
	if resp.status != http.StatusOK {
		// 401 and 400 here mean saslgate's own client authentication or request was refused:
		// a configuration problem, not a verdict on the token.
		return Identity{}, false, temporary(fmt.Sprintf("introspection endpoint answered %d %s", resp.status, http.StatusText(resp.status)), nil)
	}
	all, e := resp.members("introspection")
	if e != nil {
		return Identity{}, false, e
	}
	// RFC 7662 §2.2: "active" is REQUIRED and a boolean; without it the answer says nothing.
	switch active := all["active"]; {
	case active == nil:
		return Identity{}, false, temporary(`introspection response without "active"`, nil)
	case isJSONFalse(active):
		return Identity{}, false, invalid("token is not active")
	case !isJSONTrue(active):
		return Identity{}, false, temporary(`introspection response "active" is not a boolean`, nil)
	}
	var c claims
	if json.Unmarshal(resp.body, &c) != nil {
		return Identity{}, true, invalid("malformed claims")
	}
	// A refresh token or a DPoP token must not pass for a bearer access token.
	if raw, ok := all["token_type"]; ok {
		var tt string
		if json.Unmarshal(raw, &tt) != nil || !strings.EqualFold(tt, "Bearer") {
			return Identity{}, true, invalid(fmt.Sprintf("token_type %.32s is not Bearer", raw))
		}
	}
	id, e = is.accept(now, &c, all, r)
	return id, true, e
}

// maxSecretFileSize bounds what is read from a client secret file.
const maxSecretFileSize = 64 << 10

// clientSecret is the introspection client's secret; it never prints.
type clientSecret string

// String returns "[redacted]".
func (clientSecret) String() string { return "[redacted]" }

// LogValue returns "[redacted]".
func (clientSecret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// readClientSecret reads a secret file after checking, on the open descriptor, that group and
// others have no access to it (the rule backends applies to its secrets).
func readClientSecret(path string) (clientSecret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %#o; it must not be accessible by group or others (chmod 600)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFileSize {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxSecretFileSize)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New(path + " is empty")
	}
	return clientSecret(s), nil
}
