package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	write := func(content string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	rootOwned := os.Geteuid() == 0 // files the test writes are root's only when it runs as root
	t.Cleanup(func() { geteuid = os.Geteuid })
	for _, tc := range []struct {
		mode      os.FileMode
		serviceOK bool // accepted for saslgate running as a service user (root's file)
	}{
		{0o600, true}, {0o400, true}, {0o700, true},
		{0o640, true}, {0o440, true},
		{0o660, false}, {0o620, false}, {0o610, false}, {0o650, false},
		{0o604, false}, {0o602, false}, {0o601, false}, {0o644, false}, {0o444, false},
	} {
		write("s3cret\n", tc.mode)
		own := tc.mode&0o077 == 0
		// As root, only the owner may use the file.
		geteuid = func() int { return 0 }
		if _, _, err := Read(path, 100); (err == nil) != own {
			t.Errorf("mode %#o, saslgate as root: err = %v, want accepted %v", tc.mode, err, own)
		} else if err != nil && (!strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600")) {
			t.Errorf("mode %#o: error %q does not name the file and the fix", tc.mode, err)
		}
		if !rootOwned {
			continue
		}
		// As a service user, a root file its group may only read passes too.
		geteuid = func() int { return 65532 }
		if b, _, err := Read(path, 100); (err == nil) != tc.serviceOK {
			t.Errorf("mode %#o, root's file, saslgate as uid 65532: err = %v, want accepted %v", tc.mode, err, tc.serviceOK)
		} else if err == nil && string(b) != "s3cret\n" {
			t.Errorf("read %q", b)
		}
	}
	if !rootOwned {
		t.Log("not root: the root-owned group-readable cases ran only under CI's root")
	}

	geteuid = os.Geteuid
	write(strings.Repeat("x", 101), 0o600)
	if _, _, err := Read(path, 100); err == nil || !strings.Contains(err.Error(), "larger than 100") {
		t.Errorf("oversize: %v", err)
	}
	if _, _, err := Read(dir, 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if _, _, err := Read(filepath.Join(dir, "missing"), 100); !os.IsNotExist(err) {
		t.Errorf("missing: %v", err)
	}
}
