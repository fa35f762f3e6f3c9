// Package introspect validates OAuth 2.0 access tokens for saslgate and maps them to mailbox
// users: JWT access tokens (RFC 9068 §4) checked against signing keys found by OpenID Connect
// Discovery 1.0 §4 and a JWK Set (RFC 7517 §5), with audience, scope, expiry and username policy
// per issuer, and an expiring cache of results.
package introspect
