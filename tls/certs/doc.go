// Package certs loads the listeners' TLS certificate and key from PEM files and
// reloads them when the files change, so a renewed certificate is served on the
// next handshake without a restart.
package certs
