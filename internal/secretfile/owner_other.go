//go:build !unix

package secretfile

import "io/fs"

// ownedByRoot is false where files have no Unix owner: only mode 0600 or 0400 passes.
func ownedByRoot(fs.FileInfo) bool { return false }
