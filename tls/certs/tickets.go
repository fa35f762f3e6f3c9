package certs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// TicketRotation is how long a session-ticket key encrypts new tickets; it then decrypts for
// one more period, so a ticket resumes for at least TicketRotation and at most twice that.
const TicketRotation = 12 * time.Hour

// TicketKeyStore is a store the replicas of a fleet share (internal/shared's Store is one),
// through which they agree on session-ticket keys, so that a client resumes its TLS session
// on any replica.
type TicketKeyStore interface {
	// Get returns the value under key, or nil and no error when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// SetNX stores value under key for ttl unless key exists.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}

// tickets holds the session-ticket keys of every tls.Config a Store hands out: those
// configurations seal and open tickets through it (WrapSession, UnwrapSession), so the keys
// are one set for all listeners, survive certificate reloads and SIGHUP, and can be replaced
// under them. Without a shared store they rotate locally every TicketRotation; with one
// (SyncTickets) they are the fleet's.
type tickets struct {
	keys *tls.Config // holds the keys; its EncryptTicket and DecryptTicket do the sealing
	now  func() time.Time

	mu    sync.Mutex
	epoch int64      // the rotation period of keys[0]
	cur   [][32]byte // keys[0] encrypts
	grace time.Duration
}

func newTickets(now func() time.Time) *tickets {
	if now == nil {
		now = time.Now
	}
	t := &tickets{keys: &tls.Config{}, now: now}
	t.mu.Lock()
	t.rotateLocked(epochOf(now()))
	t.mu.Unlock()
	return t
}

func epochOf(t time.Time) int64 { return t.UnixNano() / int64(TicketRotation) }

func randomKey() [32]byte {
	var k [32]byte
	rand.Read(k[:])
	return k
}

// rotateLocked starts epoch with a fresh local key, keeping the current one for decryption.
func (t *tickets) rotateLocked(epoch int64) {
	next := [][32]byte{randomKey()}
	if len(t.cur) > 0 && epoch == t.epoch+1 {
		next = append(next, t.cur[0])
	}
	t.epoch, t.cur = epoch, next
	t.keys.SetSessionTicketKeys(next)
}

// check rotates the keys locally once their period is over (plus the grace a shared store
// gets to provide the fleet's next key first).
func (t *tickets) check() {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := epochOf(now.Add(-t.grace)); e > t.epoch {
		t.rotateLocked(e)
	}
}

func (t *tickets) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	t.check()
	return t.keys.EncryptTicket(cs, ss)
}

func (t *tickets) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	return t.keys.DecryptTicket(identity, cs)
}

// set installs the fleet's keys for epoch: cur encrypts; next and prev, when present,
// decrypt.
func (t *tickets) set(epoch int64, cur [32]byte, others ...[32]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch, t.cur = epoch, append([][32]byte{cur}, others...)
	t.keys.SetSessionTicketKeys(t.cur)
}

func ticketKey(epoch int64) string { return "tls:ticket:" + strconv.FormatInt(epoch, 10) }

// sync reads the fleet's key of the current period, creating it if no replica has yet, and
// those of the neighbouring periods, and installs them. A value that is not a 32-byte key is
// not used.
func (t *tickets) sync(ctx context.Context, kv TicketKeyStore) error {
	e := epochOf(t.now())
	get := func(epoch int64) ([32]byte, bool, error) {
		b, err := kv.Get(ctx, ticketKey(epoch))
		if err != nil || b == nil {
			return [32]byte{}, false, err
		}
		if len(b) != 32 {
			return [32]byte{}, false, fmt.Errorf("certs: %s holds %d bytes, not a ticket key", ticketKey(epoch), len(b))
		}
		return [32]byte(b), true, nil
	}
	cur, ok, err := get(e)
	if err != nil {
		return err
	}
	if !ok {
		k := randomKey()
		// Kept for the period it encrypts in, the next one it decrypts in, and one more for
		// replicas whose clocks lag.
		if _, err := kv.SetNX(ctx, ticketKey(e), k[:], 3*TicketRotation); err != nil {
			return err
		}
		// Another replica may have won the race: use what the store holds.
		if cur, ok, err = get(e); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("certs: %s vanished", ticketKey(e))
		}
	}
	var others [][32]byte
	for _, n := range []int64{e + 1, e - 1} {
		if k, ok, err := get(n); err == nil && ok {
			others = append(others, k)
		}
	}
	t.set(e, cur, others...)
	return nil
}

// SyncTickets makes the Store's session-ticket keys the fleet's: at once, then every
// interval until ctx is done, it reads them from kv (one replica creates each period's key,
// SET NX). While kv does not answer, the keys in use stay and then rotate locally, so
// resumption works per replica until the store is back. It returns when ctx is done.
func (s *Store) SyncTickets(ctx context.Context, kv TicketKeyStore, interval time.Duration, logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s.tickets.mu.Lock()
	s.tickets.grace = 2 * interval
	s.tickets.mu.Unlock()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failing := false
	for {
		err := s.tickets.sync(ctx, kv)
		switch {
		case err != nil && !failing:
			logger.Warn("TLS session-ticket keys not shared; resumption works on this replica only until the store answers", "reason", err)
		case err == nil && failing:
			logger.Info("TLS session-ticket keys shared again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
