// Package introspect validates OAuth 2.0 access tokens for saslgate and maps them to mailbox
// users. Each configured issuer checks its tokens in one mode: JWT access tokens (RFC 9068 §4)
// verified against signing keys found by OpenID Connect Discovery 1.0 §4 and a JWK Set
// (RFC 7517 §5); token introspection (RFC 7662 §2) with client authentication
// (RFC 6749 §2.3.1); or the OpenID Connect userinfo endpoint (OIDC Core §5.3) for providers
// that offer nothing else. JWTs are routed to their issuer by "iss", opaque tokens offered to
// the introspection and userinfo issuers in turn. One policy per issuer (audience, including
// the RFC 8707 resource indicators of each protocol, client, scope, expiry, username, RFC 8705
// §3 "cnf") applies in every mode, and results are cached by token hash, with concurrent
// validations of one token coalesced.
package introspect
