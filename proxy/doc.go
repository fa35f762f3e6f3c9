// Package proxy holds what saslgate's protocol front ends share, so that a front end is only
// wire framing and reply text:
//
//   - the listener configuration, the accept loop with its connection limits, handshake
//     deadline and PROXY protocol header (HAProxy v1/v2), and the session registry that
//     drains and closes sessions (Tracker);
//   - the login pipeline (Login): the failed-authentication delay, token validation and the
//     protocol-independent policy of a SASL OAuth login — RFC 7628 §3.2 host/port checks,
//     the GS2 channel-binding flag and the cbdata of draft-ietf-kitten-sasl-oauth-03 verified
//     against the connection, the authorization-identity check, RFC 8705 §3 certificate-bound
//     tokens — then the user's backend secret and the backend login, the limiter's
//     bookkeeping, and one classified Outcome per attempt that each front end answers from
//     its table (DESIGN.md "Errors");
//   - the interfaces it consumes (Validator, SecretSource, AuthLimiter) and the Observer it
//     feeds, which internal/metrics implements;
//   - Protocol, the declaration each front end makes of itself (name, configuration section,
//     server), which the program lists.
//
// The front ends live in proxy/imap and proxy/smtp, the splice of a logged-in session in
// proxy/relay, the SASL mechanisms in proxy/sasl.
package proxy
