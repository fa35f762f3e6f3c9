// Package oauthlogin gets a user an access token from an OAuth 2.0 issuer for saslgate's
// `login` command: with the device authorization grant (RFC 8628 §3), or the authorization
// code grant with PKCE (RFC 7636, S256) on a loopback redirect (RFC 8252 §7.3) whose response
// must come from the issuer asked (RFC 9207 §2.4), for the resource named (RFC 8707); then
// keeps the refresh token in a file only its owner can read and redeems it (RFC 6749 §6) for a
// fresh access token on later calls, so mail clients can run it as their token command.
// Without a configured client it registers a native public client (RFC 7591 §3, read back
// with RFC 7592 §2.1 to learn whether the issuer still knows it) and keeps the registration
// beside the token file.
package oauthlogin
