// Package sasl implements the server side of the OAUTHBEARER (RFC 7628 §3,
// with the GS2 header of RFC 5801 §4 and the cbdata key/value pair of
// draft-ietf-kitten-sasl-oauth-03) and XOAUTH2 SASL mechanisms as go-sasl
// Servers, including the RFC 7628 §3.2.2 error challenge and its close.
package sasl
