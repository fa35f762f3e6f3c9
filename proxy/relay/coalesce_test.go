package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// writeCounter counts the writes that reach the socket under a client's TLS layer.
type writeCounter struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *writeCounter) reset() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// The records crypto/tls makes of one of the splice's writes (four, of a full buffer)
// reach the client's socket in one write, with or without a Framer; without Coalesce,
// one write each.
func TestSpliceCoalescesRecords(t *testing.T) {
	for _, tc := range []struct {
		name     string
		coalesce bool
		framer   Framer
		writes   int
	}{
		{"coalesce", true, nil, 1},
		{"coalesce-framer", true, &lineFramer{}, 1},
		{"plain", false, nil, spliceBufSize / (16 << 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, raw := tcpPair(t)
			wc := &writeCounter{Conn: raw}
			var under net.Conn = wc
			if tc.coalesce {
				under = Coalesce(wc)
			}
			srv, cli := spliceTLS()
			srv = srv.Clone()
			srv.DynamicRecordSizingDisabled = true // full records from the first byte
			client, gw := tls.Client(peer, cli), tls.Server(under, srv)
			errc := make(chan error, 1)
			go func() { errc <- client.Handshake() }()
			if err := gw.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			wc.reset()

			// A full buffer of backend bytes waits in the front end's reader when the
			// splice starts, so the first write is one of spliceBufSize bytes.
			backend, gwb := tcpPair(t)
			data := bytes.Repeat([]byte("0123456789abcdef"), spliceBufSize/16)
			go backend.Write(data)
			bbr := bufio.NewReaderSize(gwb, spliceBufSize)
			if _, err := bbr.Peek(spliceBufSize); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			Start(gw, bufio.NewReader(gw), gwb, bbr, tc.framer, func(int64, int64) { close(done) })
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(data))
			if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("client read %d bytes, %v", len(got), err)
			}
			if w := wc.reset(); len(w) != tc.writes {
				t.Errorf("%d bytes reached the client in writes of %v, want %d writes", len(data), w, tc.writes)
			}
			client.Close()
			backend.Close()
			<-done
		})
	}
}

// A client over Coalesce is still read the way that holds no buffer while it is idle, and
// its socket can still be parked.
func TestCoalescedClientIdles(t *testing.T) {
	_, raw := tcpPair(t)
	tc := tls.Server(Coalesce(raw), &tls.Config{})
	if _, ok := newWaitReader(tc).(*tlsReader); !ok {
		t.Error("a TLS client over Coalesce is not read with tlsReader")
	}
	if got, want := fmt.Sprintf("%T", newWaitReader(Coalesce(raw))), fmt.Sprintf("%T", newWaitReader(raw)); got != want {
		t.Errorf("a plaintext client over Coalesce is read with %s, its socket with %s", got, want)
	}
	if canPark && socketOf(tc) == nil {
		t.Error("the socket under a TLS client over Coalesce is not found for parking")
	}
}
