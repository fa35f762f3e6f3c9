// Package backends logs in to the password-only mail servers saslgate fronts, as the mapped user
// with that user's own secret: IMAP over plain TCP, STARTTLS (RFC 9051 §6.2.1) or implicit TLS
// (RFC 8314 §3), authenticating with AUTHENTICATE PLAIN (RFC 9051 §6.2.2, RFC 4616, SASL-IR
// RFC 4959) or LOGIN (RFC 9051 §6.2.3), with per-user secrets from a file or derived by HMAC.
package backends
