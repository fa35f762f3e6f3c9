package smtp

import (
	"bufio"
	"io"
	"net"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

// heapSample is what heapSampler reads: runtime.MemStats' HeapInuse (the bytes of heap spans
// holding objects, live or not yet swept), and the live heap as the last GC marked it.
var heapSample = []rtmetrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

// heapUse is the heap in use and the live heap, read without stopping the world.
type heapUse struct{ inUse, live uint64 }

func readHeap(s []rtmetrics.Sample) heapUse {
	rtmetrics.Read(s)
	return heapUse{inUse: s[0].Value.Uint64() + s[1].Value.Uint64(), live: s[2].Value.Uint64()}
}

// heapSampler collects garbage, then returns the heap use now and a function that stops
// sampling it every millisecond and returns the largest values seen.
func heapSampler() (base heapUse, peak func() heapUse) {
	runtime.GC()
	base = readHeap(slices.Clone(heapSample))
	stop, done := make(chan struct{}), make(chan heapUse)
	go func() {
		s := slices.Clone(heapSample)
		top := base
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			h := readHeap(s)
			top = heapUse{inUse: max(top.inUse, h.inUse), live: max(top.live, h.live)}
			select {
			case <-stop:
				done <- top
				return
			case <-tick.C:
			}
		}
	}()
	return base, func() heapUse { close(stop); return <-done }
}

// ehloResponder is a backend that only greets, answers EHLO with its current extensions and
// QUIT: enough for the probe.
type ehloResponder struct {
	addr string
	mu   sync.Mutex
	ext  []string
}

func newEHLOResponder(t *testing.T, ext ...string) *ehloResponder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &ehloResponder{addr: ln.Addr().String(), ext: ext}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *ehloResponder) set(ext ...string) {
	r.mu.Lock()
	r.ext = ext
	r.mu.Unlock()
}

func (r *ehloResponder) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "220 fake ESMTP\r\n")
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		switch {
		case strings.HasPrefix(line, "EHLO "):
			r.mu.Lock()
			reply := "250-fake\r\n"
			for _, e := range r.ext {
				reply += "250-" + e + "\r\n"
			}
			r.mu.Unlock()
			io.WriteString(c, reply+"250 HELP\r\n")
		case strings.HasPrefix(line, "QUIT"):
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "502 5.5.1 no\r\n")
		}
	}
}

// The announced extensions follow the backend's as the probe refreshes them.
func TestExtensionsRefresh(t *testing.T) {
	r := newEHLOResponder(t, "SIZE 1000")
	e := newEnv(t, nil, func(s *Server) {
		s.Config.Backend.Address = r.addr
		s.Config.ExtensionsRefresh = config.Duration(50 * time.Millisecond)
	})
	ehlo := func() []string {
		c := e.dial(t, true)
		c.Send("EHLO client.example")
		return c.Expect("250 ")
	}
	if got := ehlo(); !slices.Contains(got, "250 SIZE 1000") || slices.Contains(got, "250-DSN") {
		t.Fatalf("EHLO %q, want SIZE 1000 and no DSN", got)
	}
	r.set("SIZE 2000", "DSN")
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := ehlo()
		if slices.Contains(got, "250 SIZE 2000") && slices.Contains(got, "250-DSN") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("EHLO still %q after the backend changed", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
