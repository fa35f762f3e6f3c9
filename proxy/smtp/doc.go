// Package smtp is saslgate's SMTP submission front end: go-smtp's server on an implicit-TLS
// listener (port 465, RFC 8314 §3.3) or a STARTTLS one (port 587, RFC 6409, RFC 3207), taking
// AUTH (RFC 4954) with OAUTHBEARER (RFC 7628) and XOAUTH2 once TLS is up, logging in to the
// backend as the token's user, then relaying each transaction (MAIL, RCPT, DATA or BDAT) through
// go-smtp's client and passing the backend's replies back unchanged.
//
// The extensions announced to clients beyond what go-smtp always offers (SIZE with its value,
// SMTPUTF8, DSN, REQUIRETLS) are those the backend announced to the last probe.
package smtp
