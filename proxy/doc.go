// Package proxy holds what saslgate's protocol front ends share: the listener
// configuration, the interfaces they consume (token validation, per-user
// backend secrets) and the protocol-independent part of accepting a SASL OAuth
// login: RFC 7628 §3.2 host/port checks, the GS2 channel-binding flag and the
// cbdata of draft-ietf-kitten-sasl-oauth-03 verified against the connection per
// the listener's policy, token validation, the authorization-identity check, and
// RFC 8705 §3 certificate-bound tokens checked against the client certificate. The protocols live in
// proxy/imap and proxy/smtp, the SASL mechanisms in proxy/sasl.
package proxy
