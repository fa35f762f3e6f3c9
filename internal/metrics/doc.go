// Package metrics is saslgate's operational view for Prometheus: the saslgate_* metrics the
// front ends, the accept loop and the token validator report to (connections, sessions,
// authentication outcomes, token validation, identity provider requests, backend logins,
// relayed bytes, authentication delays), kept in a registry of its own, and the admin HTTP
// endpoints that serve them with /healthz and /readyz.
//
// A nil *Metrics or *Listener records nothing, so tests and the demo can leave them out.
package metrics
