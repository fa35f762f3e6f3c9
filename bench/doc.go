// Package bench holds saslgate's benchmarks: the whole-system comparison
// with nginx's mail proxy and with Dovecot directly (command imapbench,
// `make bench`), and `go test -bench` microbenchmarks of the gateway's hot
// paths (bulk copy, login, idle session memory) and of splice variants.
// It has no API; see README.md for how to run it and the latest results.
package bench
