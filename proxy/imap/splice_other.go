//go:build !unix

package imap

import "syscall"

// newFDReader has no portable read(2) to call here: splice falls back to
// blockingReader.
func newFDReader(syscall.Conn) waitReader { return nil }
