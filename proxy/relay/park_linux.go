//go:build linux

package relay

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
)

// canPark: on Linux an idle half gives up its goroutine to the poller.
const canPark = true

// spliceParks counts the directions parked so far (tests, and the curious).
var spliceParks atomic.Int64

// poller is the one epoll set parked halves wait in, with the goroutine that
// runs them again. Each registration carries a token (in the event's data),
// never the descriptor number, so an event that arrives after its half was
// taken back cannot wake another session whose socket got the same number.
type poller struct {
	epfd int
	mu   sync.Mutex
	next uint64
	wait map[uint64]*half // parked halves by token
}

var (
	pollerOnce sync.Once
	thePoller  *poller
	pollerErr  error
)

func getPoller() (*poller, error) {
	pollerOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			pollerErr = err
			return
		}
		thePoller = &poller{epfd: fd, wait: make(map[uint64]*half)}
		go thePoller.loop()
	})
	return thePoller, pollerErr
}

func (p *poller) loop() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			panic("relay: epoll_wait: " + err.Error()) // the set is ours: cannot happen
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			h := p.wait[token]
			delete(p.wait, token)
			p.mu.Unlock()
			if h != nil {
				go h.run()
			}
		}
	}
}

// parking is a half's registration with the poller; guarded by Session.mu.
type parking struct {
	registered bool   // the socket is in the epoll set (disabled after each event: EPOLLONESHOT)
	token      uint64 // of the current wait, while parked
}

// park registers h's socket for one readiness event; h is then run again by
// the poller. It reports false, with nothing registered, if that fails. The
// caller holds h.s.mu and has checked that the connections are open.
func (h *half) park() bool {
	p, err := getPoller()
	if err != nil {
		return false
	}
	p.mu.Lock()
	p.next++
	token := p.next
	p.wait[token] = h
	p.mu.Unlock()
	op := syscall.EPOLL_CTL_ADD
	if h.parked.registered {
		op = syscall.EPOLL_CTL_MOD
	}
	// Before the event can come: the next run may park again at once.
	h.parked.token, h.parked.registered = token, true
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(token)),
		Pad:    int32(uint32(token >> 32)),
	}
	var cerr error
	if err := h.watch.Control(func(fd uintptr) { cerr = syscall.EpollCtl(p.epfd, op, int(fd), &ev) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		p.mu.Lock()
		delete(p.wait, token)
		p.mu.Unlock()
		h.parked.registered = op == syscall.EPOLL_CTL_MOD
		return false
	}
	spliceParks.Add(1)
	return true
}

// unpark takes h back if it is parked, reporting whether it was, and removes
// its socket from the epoll set; the caller holds h.s.mu, the socket is still
// open, and runs h if unpark reports true.
func (h *half) unpark() bool {
	if !h.parked.registered {
		return false
	}
	p := thePoller
	p.mu.Lock()
	_, waiting := p.wait[h.parked.token]
	delete(p.wait, h.parked.token)
	p.mu.Unlock()
	_ = h.watch.Control(func(fd uintptr) { _ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
	h.parked.registered = false
	return waiting
}
