package bench

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ---- parked: directions idle for parkAfter hold no goroutine (the prototype of proxy/imap/park_linux.go, which adds what this lacks: see bench/README.md) ----
//
// A spliced IMAP session is idle almost all its life (IDLE for ~29 minutes
// between re-issues), and with a goroutine per direction it costs two
// stacks while it is. spliceParked lets a direction that had no data for
// parkAfter give up its goroutine: it registers the socket's readiness in one
// shared epoll set and returns; the epoll goroutine starts it again when the
// socket becomes readable. A busy session never parks. It is safe with
// crypto/tls because a read that times out while waiting for the socket has
// left no complete record buffered (otherwise it would have returned it),
// and crypto/tls treats read timeouts as temporary.

// parkAfter is how long a direction waits on its own goroutine first. In
// production tens of seconds; short here so the benchmark sees parked state.
var parkAfter = 200 * time.Millisecond

type parker struct {
	epfd   int
	mu     sync.Mutex
	parked map[int32]*half
	parks  atomic.Int64 // directions parked so far (tests)
}

var (
	parkerOnce sync.Once
	theParker  *parker
	parkerErr  error
)

// sharedParker is the process's one epoll set and its goroutine.
func sharedParker() (*parker, error) {
	parkerOnce.Do(func() {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			parkerErr = err
			return
		}
		theParker = &parker{epfd: epfd, parked: map[int32]*half{}}
		go theParker.loop()
	})
	return theParker, parkerErr
}

func (p *parker) loop() {
	evs := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, evs, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			panic("bench: epoll_wait: " + err.Error())
		}
		for _, ev := range evs[:n] {
			p.mu.Lock()
			h := p.parked[ev.Fd]
			delete(p.parked, ev.Fd)
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(ev.Fd), nil)
			p.mu.Unlock()
			if h != nil {
				h.wake()
			}
		}
	}
}

func (p *parker) park(fd int, h *half) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[int32(fd)] = h
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(p.parked, int32(fd))
		return err
	}
	p.parks.Add(1)
	return nil
}

func (p *parker) cancel(fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.parked, int32(fd))
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}

type halfState int

const (
	halfRunning halfState = iota
	halfParked
	halfDone
)

type parkedSession struct {
	client, backend net.Conn
	end             func(up, down int64)

	mu      sync.Mutex
	halves  [2]*half // up, down
	running int
	closing bool
	grace   *time.Timer
}

type half struct {
	s        *parkedSession
	dst, src net.Conn
	fd       int // the socket under src, for epoll
	r        waitReader
	first    []byte
	n        int64
	down     bool
	state    halfState // guarded by s.mu
}

// spliceParked starts the session and returns at once; end is called when
// both directions are done and both connections closed.
func spliceParked(client net.Conn, cbr *bufio.Reader, backend net.Conn, bbr *bufio.Reader, end func(up, down int64)) {
	s := &parkedSession{client: client, backend: backend, end: end, running: 2}
	s.halves[0] = newHalf(s, backend, client, pending(cbr), false)
	s.halves[1] = newHalf(s, client, backend, pending(bbr), true)
	go s.halves[0].run()
	go s.halves[1].run()
}

func newHalf(s *parkedSession, dst, src net.Conn, first []byte, down bool) *half {
	h := &half{s: s, dst: dst, src: src, first: first, down: down, fd: -1, r: newWaitReader(src)}
	raw := src
	if nc, ok := src.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	if sc, ok := raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { h.fd = int(fd) })
		}
	}
	return h
}

func (h *half) run() {
	// Even empty, first points into the pre-auth bufio.Reader's buffer.
	first := h.first
	h.first = nil
	if len(first) > 0 {
		w, err := h.dst.Write(first)
		h.n += int64(w)
		if err != nil {
			h.finish()
			return
		}
	}
	for {
		dl := time.Now().Add(parkAfter)
		h.src.SetReadDeadline(dl)
		if sr, ok := h.r.(*streamReader); ok {
			sr.deadline = dl
		}
		bp, m, err := h.r.read(&spliceBufs)
		if m > 0 {
			w, werr := h.dst.Write((*bp)[:m])
			h.n += int64(w)
			spliceBufs.Put(bp)
			if werr != nil {
				h.finish()
				return
			}
		}
		if err == nil {
			continue
		}
		if m == 0 && isTimeout(err) {
			if h.park() {
				return
			}
			continue
		}
		h.finish()
		return
	}
}

// park hands the direction to the epoll goroutine; false means keep going
// (the session is closing, or the fd cannot be watched).
func (h *half) park() bool {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || h.fd < 0 {
		return false
	}
	p, err := sharedParker()
	if err != nil {
		return false
	}
	h.state = halfParked
	if err := p.park(h.fd, h); err != nil {
		h.state = halfRunning
		return false
	}
	return true
}

func (h *half) wake() {
	s := h.s
	s.mu.Lock()
	if h.state != halfParked {
		s.mu.Unlock()
		return
	}
	h.state = halfRunning
	s.mu.Unlock()
	go h.run()
}

func (h *half) finish() {
	closeWrite(h.dst)
	s := h.s
	s.mu.Lock()
	h.state = halfDone
	s.running--
	last := s.running == 0
	if !last && h.down {
		s.grace = time.AfterFunc(halfCloseGrace, s.closeBoth)
	}
	if last && s.grace != nil {
		s.grace.Stop()
	}
	s.mu.Unlock()
	if last {
		s.client.Close()
		s.backend.Close()
		s.end(s.halves[0].n, s.halves[1].n)
	}
}

// closeBoth ends the session from outside (grace period over, server
// shutdown): parked directions are woken to see the closed sockets.
func (s *parkedSession) closeBoth() {
	s.mu.Lock()
	s.closing = true
	var wake []*half
	for _, h := range s.halves {
		if h.state == halfParked {
			if p, err := sharedParker(); err == nil {
				p.cancel(h.fd)
			}
			h.state = halfRunning
			wake = append(wake, h)
		}
	}
	s.mu.Unlock()
	s.client.Close()
	s.backend.Close()
	for _, h := range wake {
		go h.run()
	}
}
