// Package backends logs in to the password-only mail servers saslgate fronts, as the mapped user
// with that user's own secret or through a master user, over plain TCP, STARTTLS or implicit TLS
// (RFC 8314 §3): IMAP (STARTTLS RFC 9051 §6.2.1; AUTHENTICATE PLAIN RFC 9051 §6.2.2, RFC 4616,
// SASL-IR RFC 4959; or LOGIN RFC 9051 §6.2.3) and SMTP submission (EHLO RFC 5321 §4.1.1.1,
// STARTTLS RFC 3207, AUTH PLAIN or LOGIN RFC 4954, or Postfix's XCLIENT LOGIN= with xtext values,
// RFC 3461 §4). A master user logs in with PLAIN's authorization identity set to the user
// (RFC 4616 §2) or as user+separator+master (Dovecot's auth_master_user_separator), with the
// master secret from a file; per-user secrets come from a file or are derived by HMAC. For a
// backend that validates tokens itself, the client's own access token is passed on with
// AUTHENTICATE or AUTH OAUTHBEARER (RFC 7628 §3.1, answering its error challenge as §3.2.3
// says) or XOAUTH2.
package backends
