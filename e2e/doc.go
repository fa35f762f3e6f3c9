// Package e2e holds saslgate's end-to-end tests: the saslgate binary between real
// clients (curl, Python imaplib and smtplib, msmtp, go-imap v2) and a real Dovecot and
// Postfix, with tokens from a real OpenID provider (node oidc-provider), all started by
// TestMain on loopback ports in temporary directories. It exercises the whole path of
// DESIGN.md: RFC 7628 OAUTHBEARER and XOAUTH2 in IMAP AUTHENTICATE (RFC 3501 §6.2.2,
// RFC 4959 SASL-IR) and SMTP AUTH (RFC 4954) on implicit-TLS and STARTTLS listeners
// (RFC 8314, RFC 3207, RFC 6409), RFC 9068 JWT access-token checks, the error table,
// and mail submitted through saslgate delivered by Postfix and read back through it.
// See README.md for how to run it; the package has no non-test code.
package e2e
