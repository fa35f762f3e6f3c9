// Package probe is a diagnostic IMAP and SMTP submission client for saslgate's `probe` and
// `check` commands. It connects with implicit TLS (RFC 8314), STARTTLS (RFC 9051 §6.2.1,
// RFC 3207) or, for backends on a trusted network, plain TCP; reads the greeting and the
// capabilities; and optionally authenticates with OAUTHBEARER (RFC 7628 §3.1, with the GS2
// header of RFC 5801 §4 and, on request, the cbdata pair of draft-ietf-kitten-sasl-oauth-03
// carrying tls-exporter (RFC 9266) or tls-server-end-point (RFC 5929 §4) channel-binding data)
// or XOAUTH2, answering an RFC 7628 §3.2.2 error challenge as §3.2.3 requires. Every line is
// written to a transcript with the token redacted.
package probe
