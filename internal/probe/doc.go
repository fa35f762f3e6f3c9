// Package probe is a diagnostic IMAP, POP3, SMTP submission and ManageSieve client for
// saslgate's `probe` and `check` commands. It connects with implicit TLS (RFC 8314), STARTTLS
// (RFC 9051 §6.2.1, RFC 3207, RFC 5804 §2.2), STLS (RFC 2595 §4) or, for backends on a trusted
// network, plain TCP; reads the greeting and the capabilities (POP3 CAPA, RFC 2449 §5;
// the ManageSieve capability response, RFC 5804 §1.7); and optionally authenticates with
// OAUTHBEARER (RFC 7628 §3.1, with the GS2 header of RFC 5801 §4 and, on request, the cbdata
// pair of draft-ietf-kitten-sasl-oauth-03 carrying tls-exporter (RFC 9266) or
// tls-server-end-point (RFC 5929 §4) channel-binding data) or XOAUTH2, in each protocol's SASL
// framing (IMAP AUTHENTICATE, SMTP AUTH, POP3 AUTH of RFC 5034, ManageSieve AUTHENTICATE of
// RFC 5804 §2.1), answering an RFC 7628 §3.2.2 error challenge as §3.2.3 requires. Every line
// is written to a transcript with the token redacted.
package probe
