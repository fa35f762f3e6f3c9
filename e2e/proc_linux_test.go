package e2e

import "syscall"

// procAttr puts a child in its own process group (so teardown can signal the whole
// tree, e.g. Dovecot's master and its workers) and kills it if the test binary dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
