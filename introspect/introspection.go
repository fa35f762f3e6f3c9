package introspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/secretfile"
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
	// Malformed claims in an answer that says the token is active are a verdict on the token,
	// like a mismatched "aud": only a malformed answer (not a JSON object, "active" missing or
	// not a boolean) is the provider's fault and temporary.
	var c claims
	if err := json.Unmarshal(resp.body, &c); err != nil {
		return Identity{}, true, malformedClaims(err)
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

// readClientSecret reads a secret file under secretfile's rule, the one every secret file of
// saslgate follows.
func readClientSecret(path string) (clientSecret, error) {
	b, _, err := secretfile.Read(path, maxSecretFileSize)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New(path + " is empty")
	}
	return clientSecret(s), nil
}
