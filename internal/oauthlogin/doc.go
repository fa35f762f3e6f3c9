// Package oauthlogin gets a user an access token from an OAuth 2.0 issuer for saslgate's
// `login` command: with the device authorization grant (RFC 8628 §3), or the authorization
// code grant with PKCE (RFC 7636, S256) on a loopback redirect (RFC 8252 §7.3); then keeps
// the refresh token in a file only its owner can read and redeems it (RFC 6749 §6) for a
// fresh access token on later calls, so mail clients can run it as their token command.
package oauthlogin
