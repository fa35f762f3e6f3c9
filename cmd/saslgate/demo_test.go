package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemoCommandsWorkAsPrinted runs `saslgate demo` on free ports and then
// the shell commands it prints, with the real curl and python3.
func TestDemoCommandsWorkAsPrinted(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("SASLGATE_E2E") == "require" {
				t.Fatalf("%s is required (SASLGATE_E2E=require): %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- demoCmd(ctx, []string{"--imaps", "127.0.0.1:0", "--imap", "127.0.0.1:0", "--smtps", "127.0.0.1:0", "--submission", "127.0.0.1:0", "--issuer", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	})

	var tokenLine, fetchToken string
	var commands []string
	sc := bufio.NewScanner(pr)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "curl "), strings.HasPrefix(line, "printf "), strings.HasPrefix(line, `TOKEN="$TOKEN" python3`):
			commands = append(commands, line)
		case strings.HasPrefix(line, "TOKEN=$("):
			fetchToken = line
		case strings.HasPrefix(line, "TOKEN="):
			tokenLine = line
		}
		if strings.Contains(line, "python3 -c 'import imaplib") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if tokenLine == "" || fetchToken == "" || len(commands) != 6 {
		t.Fatalf("demo output lacks the token or commands: token=%q fetch=%q commands=%q", tokenLine, fetchToken, commands)
	}
	// In printed order: list, fetch, list over STARTTLS, send through SMTP (no
	// output), search INBOX (the welcome message and what was sent), python.
	want := []string{`"/" INBOX`, "Hello alice, you logged in with an OAuth 2.0 access token.", `"/" INBOX`, "", "* SEARCH 1 2", "Subject: Welcome to saslgate"}
	for _, tokenSource := range []string{tokenLine, fetchToken} {
		for i, cmd := range commands {
			script := "set -e\n" + tokenSource + "\n" + cmd + "\n"
			c := exec.Command("bash", "-c", script)
			c.WaitDelay = 5 * time.Second
			out, err := c.CombinedOutput()
			if err != nil {
				t.Errorf("%s\nfailed: %v\n%s", cmd, err, out)
				continue
			}
			if !strings.Contains(string(out), want[i]) {
				t.Errorf("%s\noutput %q does not contain %q", cmd, out, want[i])
			}
		}
	}
}
