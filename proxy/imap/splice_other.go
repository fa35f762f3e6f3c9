//go:build !unix

package imap

import (
	"syscall"
	"time"
)

// newFDReader has no portable read(2) to call here: splice falls back to
// blockingReader.
func newFDReader(syscall.Conn, interface{ SetReadDeadline(time.Time) error }) waitReader {
	return nil
}
