//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileResult is what the profiling phase found, on the twin.
type profileResult struct {
	dir       string
	tops      []profileTop
	idle      idleResult
	heapIdle  memStats // after GC, with the sessions open
	heapEmpty memStats // after GC, after the warm-up, before the sessions
	goroutine string   // path of the goroutine dump with the sessions open
}

type profileTop struct {
	title string
	file  string
	top   string // `go tool pprof -top` output, trimmed
}

// memStats is the part of runtime.MemStats the report uses (from /debug/vars).
type memStats struct {
	HeapInuse   uint64
	StackInuse  uint64
	HeapObjects uint64
	Sys         uint64
	Goroutines  int
}

// runProfiles runs the bulk, login and idle loads against the twin (same
// packages and wiring as `saslgate serve`, plus pprof) and saves CPU
// profiles of the bulk FETCH and of 64-client logins (cache on and off),
// and a heap profile and goroutine dump with the idle sessions open.
func (w *world) runProfiles(ctx context.Context) (*profileResult, error) {
	pr := &profileResult{dir: filepath.Join(w.cfg.out, "profiles")}
	if err := os.MkdirAll(pr.dir, 0o755); err != nil {
		return nil, err
	}
	twin, err := w.startGate(ctx, "twin", false, true)
	if twin != nil {
		defer twin.proc.stop()
	}
	if err != nil {
		return nil, err
	}
	twinNC, err := w.startGate(ctx, "twin-nocache", true, true)
	if twinNC != nil {
		defer twinNC.proc.stop()
	}
	if err != nil {
		return nil, err
	}
	const secs = 8
	tt := target{label: "saslgate twin", addr: twin.addr, auth: authBearer, proxy: twin.proc}

	// Bulk: FETCH passes for as long as the profile runs.
	progress("profile: bulk FETCH (%ds)", secs)
	c, err := w.open(ctx, tt, w.bulk, 256<<10)
	if err != nil {
		return nil, fmt.Errorf("profile bulk: %w", err)
	}
	done := pr.cpuProfile(twin, secs, "cpu-bulk.pprof", "CPU, bulk FETCH through saslgate")
	for busy := true; busy; {
		if _, err := c.cmd("FETCH 1:* BODY.PEEK[]"); err != nil {
			c.close()
			return nil, fmt.Errorf("profile bulk: %w", err)
		}
		select {
		case <-done:
			busy = false
		default:
		}
	}
	c.close()

	for _, l := range []struct {
		g     *gate
		file  string
		title string
	}{
		{twinNC, "cpu-login-nocache.pprof", fmt.Sprintf("CPU, %d-client logins, cache off", w.cfg.conc)},
		{twin, "cpu-login-cached.pprof", fmt.Sprintf("CPU, %d-client logins, cache on", w.cfg.conc)},
	} {
		progress("profile: %s (%ds)", l.title, secs)
		t := target{label: l.g.name, addr: l.g.addr, auth: authBearer, proxy: l.g.proc}
		w.loginLoop(ctx, t, w.cfg.conc, time.Second, false, nil, nil)
		done := pr.cpuProfile(l.g, secs, l.file, l.title)
		w.loginLoop(ctx, t, w.cfg.conc, secs*time.Second+500*time.Millisecond, false, nil, nil)
		<-done
	}

	// Idle: a fresh twin, its heap after GC before and with the sessions.
	progress("profile: %d idle sessions", w.cfg.sessions)
	twin.proc.stop()
	twin.name = "twin-idle"
	if err := twin.start(ctx, w); err != nil {
		return nil, err
	}
	tt.proxy = twin.proc
	w.loginLoop(ctx, tt, w.cfg.conc, time.Second, false, nil, nil)
	pr.heapEmpty, _ = twin.memStats()
	pr.idle, err = w.runIdle(ctx, tt, w.cfg.sessions, w.cfg.conc, w.cfg.settle, func() {
		pr.heapIdle, _ = twin.memStats()
		heap := filepath.Join(pr.dir, "heap-idle.pprof")
		if err := twin.fetch("/debug/pprof/heap?gc=1", heap); err == nil {
			pr.addTop("heap in use, idle sessions open", heap, "-sample_index=inuse_space")
		}
		pr.goroutine = filepath.Join(pr.dir, "goroutines-idle.txt")
		_ = twin.fetch("/debug/pprof/goroutine?debug=1", pr.goroutine)
	})
	pr.idle.target.label = "saslgate twin"
	return pr, err
}

// cpuProfile starts a CPU profile of secs seconds; the channel closes when
// it is saved and summarised.
func (pr *profileResult) cpuProfile(g *gate, secs int, file, title string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		path := filepath.Join(pr.dir, file)
		if err := g.fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), path); err != nil {
			fmt.Fprintln(os.Stderr, "imapbench: profile:", err)
			return
		}
		pr.addTop(title, path)
	}()
	return done
}

func (pr *profileResult) addTop(title, path string, args ...string) {
	self, _ := os.Executable()
	argv := append([]string{"tool", "pprof", "-top", "-nodecount=25"}, args...)
	out, err := exec.Command("go", append(argv, self, path)...).CombinedOutput()
	if err != nil {
		out = append(out, []byte(err.Error())...)
	}
	_ = os.WriteFile(strings.TrimSuffix(path, ".pprof")+".top.txt", out, 0o644)
	pr.tops = append(pr.tops, profileTop{title: title, file: path, top: string(out)})
}

func (g *gate) fetch(path, dst string) error {
	resp, err := http.Get("http://" + g.pprof + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// memStats runs a GC (through the heap profile endpoint) and reads the
// runtime's memory statistics from /debug/vars.
func (g *gate) memStats() (memStats, error) {
	var m memStats
	if err := g.fetch("/debug/pprof/heap?gc=1", os.DevNull); err != nil {
		return m, err
	}
	resp, err := http.Get("http://" + g.pprof + "/debug/vars")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	var v struct {
		Memstats   memStats `json:"memstats"`
		Goroutines int      `json:"goroutines"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return m, err
	}
	m = v.Memstats
	m.Goroutines = v.Goroutines
	return m, nil
}
