//go:build !linux

package relay

// canPark: without epoll here, every half keeps its goroutine.
const canPark = false

type parking struct{}

func (h *half) park() bool   { return false }
func (h *half) unpark() bool { return false }
