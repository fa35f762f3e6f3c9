package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// memKV is an in-memory TicketKeyStore, as a store is between replicas.
type memKV struct {
	mu   sync.Mutex
	m    map[string][]byte
	down bool
}

func (s *memKV) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errors.New("down")
	}
	return s.m[key], nil
}

func (s *memKV) SetNX(_ context.Context, key string, v []byte, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return false, errors.New("down")
	}
	if _, ok := s.m[key]; ok {
		return false, nil
	}
	s.m[key] = bytes.Clone(v)
	return true, nil
}

// resumes handshakes with server (a fresh client session cache) and then with next, and
// reports whether the second resumed the first's session.
func resumes(t *testing.T, server, next *tls.Config, version uint16) bool {
	t.Helper()
	cert, err := server.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cc := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(2), MaxVersion: version}
	var resumed bool
	for i, sc := range []*tls.Config{server, next} {
		// Loopback TCP, not net.Pipe: close_notify must not wait for a reader.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c1, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			s := tls.Server(c2, sc)
			err := s.Handshake()
			if err == nil {
				_, err = s.Write([]byte("x")) // after the handshake: carries the TLS 1.3 ticket along
			}
			if err == nil {
				s.Read(make([]byte, 1)) // until the client closes
			}
			s.Close()
			done <- err
		}()
		c := tls.Client(c1, cc)
		if err := c.Handshake(); err != nil {
			t.Fatalf("connection %d: client handshake: %v", i, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("connection %d: client read: %v", i, err)
		}
		if i == 1 {
			resumed = c.ConnectionState().DidResume
		}
		c.Close()
		if err := <-done; err != nil {
			t.Fatalf("connection %d: server: %v", i, err)
		}
	}
	return resumed
}

func selfSignedStore(t *testing.T) *Store {
	t.Helper()
	c, _, err := SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	return FromCertificate(c)
}

// Every TLSConfig of one Store shares its ticket keys (a clone too); two Stores do not,
// until both sync with one store.
func TestSessionTickets(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		a, b := selfSignedStore(t), selfSignedStore(t)
		b.cert = a.cert
		if !resumes(t, a.TLSConfig(), a.TLSConfig().Clone(), v) {
			t.Errorf("version %x: a session did not resume on another listener of the same Store", v)
		}
		if resumes(t, a.TLSConfig(), b.TLSConfig(), v) {
			t.Errorf("version %x: a session resumed on another replica without a shared store", v)
		}
		kv := &memKV{m: map[string][]byte{}}
		if err := a.tickets.sync(context.Background(), kv); err != nil {
			t.Fatal(err)
		}
		if err := b.tickets.sync(context.Background(), kv); err != nil {
			t.Fatal(err)
		}
		if !resumes(t, a.TLSConfig(), b.TLSConfig(), v) {
			t.Errorf("version %x: a session did not resume on the other replica with shared keys", v)
		}
		// A hostile value in the store is not a key: the sync fails and the keys stay.
		for k := range kv.m {
			kv.m[k] = []byte("short")
		}
		if err := b.tickets.sync(context.Background(), kv); err == nil {
			t.Error("a 5-byte ticket key was accepted")
		}
		if !resumes(t, a.TLSConfig(), b.TLSConfig(), v) {
			t.Errorf("version %x: a failed sync dropped the shared keys", v)
		}
	}
}

// Local keys rotate every TicketRotation, the previous one still decrypting: a ticket
// resumes across one rotation, not two.
func TestSessionTicketRotation(t *testing.T) {
	now := time.Unix(0, 0).Add(100 * TicketRotation)
	tk := newTickets(func() time.Time { return now })
	first := tk.cur[0]
	now = now.Add(TicketRotation)
	tk.check()
	if len(tk.cur) != 2 || tk.cur[1] != first || tk.cur[0] == first {
		t.Fatalf("after one period: %d keys, previous kept %v", len(tk.cur), len(tk.cur) == 2 && tk.cur[1] == first)
	}
	now = now.Add(TicketRotation)
	tk.check()
	for _, k := range tk.cur {
		if k == first {
			t.Error("a key two periods old still decrypts")
		}
	}
}
