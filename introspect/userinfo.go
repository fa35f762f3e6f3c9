package introspect

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// userinfo presents r.Token to the issuer's userinfo endpoint (OIDC Core §5.3.1, RFC 6750 §2.1).
// known reports that the endpoint accepted the token: the policy's verdict on it is then final.
//
// All a userinfo answer proves is that the provider accepts the token for userinfo now; see
// IssuerConfig.UserinfoEndpoint for what that leaves unchecked.
func (is *issuer) userinfo(ctx context.Context, now time.Time, r Request) (id Identity, known bool, e *Error) {
	u, e := is.endpoint.get(ctx)
	if e != nil {
		return Identity{}, false, e
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return Identity{}, false, temporary("userinfo request", err)
	}
	req.Header.Set("Authorization", "Bearer "+r.Token)
	req.Header.Set("Accept", "application/json")
	resp, err := is.http.request(ctx, is.http.direct, req, IdPUserinfo)
	if err != nil {
		return Identity{}, false, temporary("userinfo failed", err)
	}
	switch resp.status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		// RFC 6750 §3.1: invalid_token (401), or a token not good for userinfo (403).
		return Identity{}, false, invalid(fmt.Sprintf("userinfo endpoint refused the token (%d)", resp.status))
	default:
		return Identity{}, false, temporary(fmt.Sprintf("userinfo endpoint answered %d %s", resp.status, http.StatusText(resp.status)), nil)
	}
	all, e := resp.members("userinfo")
	if e != nil {
		return Identity{}, false, e
	}
	var c claims
	if err := json.Unmarshal(resp.body, &c); err != nil {
		return Identity{}, true, malformedClaims(err)
	}
	id, e = is.accept(now, &c, all, r)
	return id, true, e
}
