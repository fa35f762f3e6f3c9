package bench

import (
	"bufio"
	"crypto/tls"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childGateway is a gateway running in a process of its own, so that what it costs is
// measured apart from the clients and the backend: this test binary started again with
// -test.run ^test$, which prints its listener's address and then answers one line on its
// standard output for each request line on its standard input, until that closes.
type childGateway struct {
	g    gateway // the client's view: address, TLS configuration, token
	ctl  io.WriteCloser
	resp *bufio.Reader
}

// startChild starts the child running test, with env added to this process's environment
// and args after -test.run; it is stopped when b ends.
func startChild(b testing.TB, test string, env []string, args ...string) *childGateway {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run", "^" + test + "$"}, args...)...)
	// Under -race the child would sleep a second at exit (GORACE's atexit_sleep_ms).
	cmd.Env = append(os.Environ(), append(env, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")...)
	cmd.Stderr = os.Stderr
	ctl, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ctl.Close(); cmd.Wait() })
	p := &childGateway{ctl: ctl, resp: bufio.NewReader(out)}
	addr, err := p.resp.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	p.g = gateway{
		addr:      strings.TrimSpace(addr),
		clientTLS: &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}},
		token:     "opaque-bench-token",
	}
	return p
}

// ask sends the child one request line and returns its answer.
func (p *childGateway) ask(b testing.TB, req string) string {
	if _, err := io.WriteString(p.ctl, req+"\n"); err != nil {
		b.Fatal(err)
	}
	line, err := p.resp.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(line)
}
