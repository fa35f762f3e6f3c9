// Package fetest is the test scaffolding the front ends' tests (proxy/imap, proxy/pop3,
// proxy/sieve, proxy/smtp) share: a gateway's surroundings (a demo issuer, a self-signed
// certificate, one loopback listener per TLS mode), a line-level client for transcript tests,
// SASL initial responses, and the in-memory client the fuzz targets run on. It is imported
// only by _test.go files; what is specific to a protocol stays in that front end's tests.
package fetest
