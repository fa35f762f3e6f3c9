//go:build !unix

package relay

import (
	"syscall"
	"time"
)

// newFDReader has no portable read(2) to call here: the splice falls back to
// blockingReader.
func newFDReader(syscall.Conn, interface{ SetReadDeadline(time.Time) error }) waitReader {
	return nil
}
