// Package e2e holds saslgate's end-to-end tests: the saslgate binary between real
// clients (curl, Python imaplib, go-imap v2) and a real Dovecot, with tokens from a
// real OpenID provider (node oidc-provider), all started by TestMain on loopback
// ports in temporary directories. It exercises the whole path of DESIGN.md: RFC 7628
// OAUTHBEARER and XOAUTH2 in IMAP AUTHENTICATE (RFC 3501 §6.2.2, RFC 4959 SASL-IR),
// STARTTLS (RFC 3501 §6.2.1), RFC 9068 JWT access-token checks and the error table.
// See README.md for how to run it; the package has no non-test code.
package e2e
