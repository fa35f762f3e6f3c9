// Package pop3 is saslgate's POP3 front end: a small hand-written AUTHORIZATION state
// (RFC 1939 §4, §7) with CAPA (RFC 2449 §5), STLS (RFC 2595 §4), AUTH (RFC 5034 §4) for
// OAUTHBEARER (RFC 7628) and XOAUTH2, optionally USER/PASS with the token as the password,
// NOOP and QUIT, answering failures with the response codes of RFC 2449 §8 and RFC 3206. It
// logs in to the backend as the token's user through the shared login pipeline
// (proxy.Login), then splices bytes both ways (proxy/relay) so every backend command and
// extension works.
//
// Bytes a client pipelines behind a successful AUTH or PASS are forwarded to the backend;
// bytes sent behind STLS are discarded (CVE-2011-0411).
package pop3
