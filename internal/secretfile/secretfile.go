// Package secretfile reads the files saslgate keeps secrets in (TLS private keys, the HMAC
// key, backend secrets, IdP client secrets) under one rule about who else may use them.
package secretfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Read returns the contents of path, at most max bytes, and the FileInfo of the descriptor
// read. Checked on that descriptor (so a file swapped in between is checked as read): it is a
// regular file, and no one but its owner may read, write or run it (mode 0600 or 0400) — with
// one exception, PostgreSQL's rule for its key files: a file root owns may also be readable,
// only readable, by its group (0640, 0440) when saslgate does not run as root. That is how
// Kubernetes mounts secrets for a pod with an fsGroup, and how certbot keys are shared with a
// service group; root's own files cannot be planted by the service user.
//
// Errors name the path and the mode, never the contents.
func Read(path string, max int64) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if err := Check(path, fi); err != nil {
		return nil, nil, err
	}
	if fi.Size() > max {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(b)) > max {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, fi, nil
}

// geteuid is os.Geteuid; tests set it.
var geteuid = os.Geteuid

// Check applies Read's rule to the FileInfo of an open file.
func Check(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	perm := fi.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if perm&0o037 == 0 && ownedByRoot(fi) && geteuid() != 0 {
		return nil // 0640 or 0440, root's, read by a service user through its group
	}
	return fmt.Errorf("%s has mode %#o; it must not be accessible by group or others (chmod 600; or, for a file root owns, 0640 with saslgate's group)", path, perm)
}
