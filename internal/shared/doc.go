// Package shared connects saslgate replicas to one Valkey or Redis store, through which they
// share the state that makes N replicas behind a load balancer act as one: the
// failed-authentication counts, introspection and userinfo results, refused backend logins
// and TLS session-ticket keys. It owns the "shared:" configuration section and a Store with a
// short timeout per call, metrics and rate-limited logging of failures; the packages that
// share state define the small interfaces the Store satisfies and fall back to their local
// state whenever a call fails.
package shared
