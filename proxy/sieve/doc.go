// Package sieve is saslgate's ManageSieve front end (RFC 5804): a small hand-written
// not-authenticated state (§2: CAPABILITY, NOOP, LOGOUT, STARTTLS, AUTHENTICATE with an
// initial response as a quoted string or literal) that accepts OAUTHBEARER (RFC 7628) and
// XOAUTH2, logs in to the backend (Dovecot Pigeonhole and the like) as the token's user, then
// splices bytes both ways, so PUTSCRIPT, SETACTIVE and every other command go to the user's
// own script store.
//
// The capability response (§1.7) is saslgate's own IMPLEMENTATION, SASL and STARTTLS, and
// the backend's SIEVE, NOTIFY, MAXREDIRECTS, VERSION and other capabilities, learned when the
// server starts and refreshed. Bytes a client pipelines behind a successful AUTHENTICATE are
// forwarded to the backend; bytes sent behind STARTTLS are discarded (CVE-2011-0411).
package sieve
