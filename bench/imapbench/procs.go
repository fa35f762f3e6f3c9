//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one child process in its own process group (Dovecot's and nginx's
// workers join it), output appended to a log file, killed if the bench dies.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func startProc(name, logPath string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the group, SIGKILL after a grace period, and kills
// stragglers (Dovecot and nginx workers) either way.
func (p *proc) stop() {
	if p == nil {
		return
	}
	pg := p.pid()
	_ = syscall.Kill(-pg, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pg, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-pg, syscall.SIGKILL)
	p.log.Close()
}

// waitPort dials addr until it accepts, the process exits, or ctx ends.
func waitPort(ctx context.Context, addr string, p *proc) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v (log: %s)", p.name, addr, p.err, p.log.Name())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening: %w", addr, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// usage is what /proc says about a process group at one instant.
type usage struct {
	cpu   time.Duration // user+system of live members, plus reaped children of the leader
	rss   int64         // bytes, summed over members
	procs int
}

// groupUsage sums CPU and RSS over the processes of group pgid (the leader
// started by startProc and every descendant that kept its group). CPU of
// children that exited and were reaped is in the leader's cutime/cstime.
func groupUsage(pgid int) (usage, error) {
	var u usage
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return u, err
	}
	page := int64(os.Getpagesize())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := readStat(pid)
		if err != nil || f.pgrp != pgid {
			continue
		}
		ticks := f.utime + f.stime
		if pid == pgid {
			ticks += f.cutime + f.cstime
		}
		u.cpu += time.Duration(ticks) * time.Second / userHZ
		u.rss += f.rss * page
		u.procs++
	}
	if u.procs == 0 {
		return u, fmt.Errorf("process group %d has no members", pgid)
	}
	return u, nil
}

type statFields struct {
	pgrp                         int
	utime, stime, cutime, cstime int64
	rss                          int64 // pages
}

func readStat(pid int) (statFields, error) {
	var s statFields
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return s, err
	}
	// The command name is in parentheses and may contain anything; fields
	// are counted from after the last ')': index 0 is field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return s, errors.New("short stat")
	}
	num := func(field int) int64 { v, _ := strconv.ParseInt(f[field-3], 10, 64); return v }
	s.pgrp = int(num(5))
	s.utime, s.stime, s.cutime, s.cstime = num(14), num(15), num(16), num(17)
	s.rss = num(24)
	return s, nil
}

// selfCPU is this process's user+system time (the clients, the issuer and
// nginx's auth_http responder all live here).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the busy time of all CPUs since boot, from /proc/stat.
func machineCPU() time.Duration {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / userHZ
}

// raiseFileLimit lifts RLIMIT_NOFILE for this process and, because it is set
// explicitly, for every child (Go otherwise restores the original limit in
// children): n sessions spliced by one proxy process take 2n descriptors.
// Without CAP_SYS_RESOURCE the hard limit cannot be raised; the soft limit
// is then raised to it and the achieved limit returned.
func raiseFileLimit(n uint64) (uint64, error) {
	lim := syscall.Rlimit{Cur: n, Max: n}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		return n, nil
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise open files limit: %w", err)
	}
	return lim.Max, nil
}
