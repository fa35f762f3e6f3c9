// Package binding computes what ties an OAuth token or a SASL exchange to one TLS
// connection: the RFC 8705 §3.1 x5t#S256 thumbprint of a client certificate, and the
// channel-binding data of tls-exporter (RFC 9266, TLS 1.3 only) and tls-server-end-point
// (RFC 5929 §4.1) that draft-ietf-kitten-sasl-oauth-03's cbdata carries.
package binding
