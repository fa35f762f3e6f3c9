// Package maildiscover finds, from an email address alone, the mail servers of its domain and
// the OAuth 2.0 issuer that signs tokens for them, for saslgate's `login` command. It tries,
// in order: the domain's autoconfig document (draft-ietf-mailmaint-autoconfig, "Config
// retrieval": the provider's URLs 1.1 and 1.2, then 3.1 through the domain's MX host) with
// its oAuth2 element; WebFinger (RFC 7033 §4) for the OpenID Connect issuer relation (OpenID
// Connect Discovery 1.0 §2); the protected resource metadata (RFC 9728 §3) of the mail
// server's resource; and the error challenge (RFC 7628 §3.2.2) a mail server answers an
// invalid token with, whose openid-configuration names the issuer's metadata. Every step
// reports on a writer what it tried and what it found.
package maildiscover
