// Package idpmeta reads what an OAuth 2.0 issuer publishes about itself, for saslgate's
// client-side tools (`check`, `login`): its metadata (OpenID Connect Discovery 1.0 §4, or
// RFC 8414 §3 authorization server metadata), checked to name the expected issuer
// (Discovery §4.3, RFC 8414 §3.3), and its JWK Set (RFC 7517 §5). The gateway's own token
// validation (package introspect) does not use it.
package idpmeta
