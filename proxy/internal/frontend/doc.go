// Package frontend is the scaffolding beneath the wire framing of saslgate's front ends
// (proxy/imap, proxy/pop3, proxy/sieve, proxy/smtp), written once: a listener's Server (its
// TLS configuration with client-certificate requests, connection ids, the session registry
// that Shutdown and Close act on) and, for the front ends that splice once logged in (IMAP,
// POP3, ManageSieve), the life of one client Conn: its pre-authentication stream and TLS
// handshake, the handoff to proxy/relay, the end of a drain and the abort.
package frontend
