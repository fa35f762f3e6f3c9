//go:build unix && !linux

package e2e

import "syscall"

// procAttr puts a child in its own process group so teardown can signal the whole tree.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
