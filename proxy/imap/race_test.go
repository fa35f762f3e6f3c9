//go:build race

package imap

// raceEnabled: under the race detector sync.Pool drops a quarter of what is
// put back, so the pool makes more buffers than it otherwise would.
const raceEnabled = true
