//go:build race

package e2e

// raceEnabled: `go test -race` also builds the saslgate binary with -race, and
// TestMain fails the run if its log reports a data race.
const raceEnabled = true
