package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child process started by TestMain, in its own process group, with
// stdout and stderr captured to a log file that is dumped when something fails.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, valid after done
}

// startProc starts argv with its output appended to logPath. If ready is non-nil,
// stdout is also scanned line by line and every line is passed to ready until it
// returns true; startProc then returns once ready has seen its line or the process
// exited or the timeout passed.
func startProc(name, logPath string, env []string, ready func(line string) bool, timeout time.Duration, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = procAttr()
	cmd.Stderr = f
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}

	readyCh := make(chan struct{})
	var pipeDone chan struct{}
	if ready == nil {
		cmd.Stdout = f
	} else {
		pr, pw := io.Pipe()
		cmd.Stdout = pw
		pipeDone = make(chan struct{})
		go func() {
			defer close(pipeDone)
			var once sync.Once
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				line := sc.Text()
				fmt.Fprintln(f, line)
				if ready(line) {
					once.Do(func() { close(readyCh) })
				}
			}
			_, _ = io.Copy(f, pr)
		}()
		go func() { // EOF for the scanner once the process has gone
			<-p.done
			pw.Close()
		}()
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if ready == nil {
		return p, nil
	}
	select {
	case <-readyCh:
		return p, nil
	case <-p.done:
		if pipeDone != nil {
			<-pipeDone
		}
		return p, fmt.Errorf("%s exited before it was ready: %v", name, p.err)
	case <-time.After(timeout):
		return p, fmt.Errorf("%s not ready after %v", name, timeout)
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if it lingers.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Stragglers of the group (Dovecot workers) must not outlive the run.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	p.logFile.Close()
}

// waitPort dials addr until it accepts a connection, the process exits or the timeout passes.
func waitPort(ctx context.Context, addr string, p *proc) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v", p.name, addr, p.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening: %w", addr, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a loopback address with a port that was free a moment ago. The
// servers under test need their ports in their config files, so this small race is
// accepted.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail returns the last max bytes of a file, for failure dumps.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimRight(string(b), "\n")
}
