package shared

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Observer receives every call to the store, for metrics. op is the operation (get, set,
// setnx, incr, count, del, ping); result is "ok", "error" (the call failed or timed out) or
// "skipped" (not sent: the store failed moments ago). Calls are concurrent and must be cheap.
type Observer interface {
	ObserveSharedCall(op, result string, d time.Duration)
}

// ErrUnavailable is wrapped by every error of a call that did not reach the store or got no
// usable answer; callers fall back to their local state.
var ErrUnavailable = errors.New("shared: store unavailable")

// retryAfter is how long after a failed call the next ones are not sent (answered with
// ErrUnavailable at once): a store that stopped answering costs each login one timeout per
// retryAfter, not one per call.
const retryAfter = time.Second

// logEvery bounds the "store unavailable" log lines.
const logEvery = 10 * time.Second

// Store is a connection (pool) to the shared Valkey or Redis store. Every key it is given is
// prefixed with Config.KeyPrefix. Its methods are safe for concurrent use; each call is bounded
// by Config.Timeout.
type Store struct {
	client  redis.UniversalClient
	prefix  string
	timeout time.Duration
	obs     Observer
	log     *slog.Logger
	now     func() time.Time

	mu        sync.Mutex
	downUntil time.Time // calls before it are skipped
	down      bool      // the last call failed; logged once when it recovers
	lastLog   time.Time
	failed    int // failures not logged since lastLog
}

// Option configures a Store.
type Option func(*Store)

// WithObserver reports every call to o.
func WithObserver(o Observer) Option { return func(s *Store) { s.obs = o } }

// WithLogger sets the logger for store trouble (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

var quietOnce sync.Once

// New returns the Store cfg describes (cfg must be Enabled and valid). It reads the password
// file and CA file, but does not connect: connections are made on first use, and a store
// that is down at start only means local state until it is up.
func New(cfg Config, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("shared: no address configured")
	}
	pw, err := cfg.password()
	if err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	// go-redis logs through a package-level logger; its lines (pool and reconnect chatter)
	// would bypass slog. The Store logs what matters itself.
	quietOnce.Do(func() { redis.SetLogger(discardLogger{}) })
	t := cfg.timeout()
	uo := &redis.UniversalOptions{
		Username:     cfg.Username,
		Password:     pw,
		DB:           cfg.DB,
		TLSConfig:    tc,
		DialTimeout:  t,
		ReadTimeout:  t,
		WriteTimeout: t,
		// No retries: a retry would stretch the call beyond its timeout, and the caller has
		// a local fallback.
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true, // no CLIENT SETINFO: older servers and proxies refuse it
		Protocol:              2,
		PoolTimeout:           t,
	}
	var client redis.UniversalClient
	if cfg.Sentinel.MasterName != "" {
		fo := uo.Failover()
		fo.MasterName, fo.SentinelAddrs = cfg.Sentinel.MasterName, cfg.Sentinel.Addresses

		client = redis.NewFailoverClient(fo)
	} else {
		o := uo.Simple()
		o.Addr = cfg.Address
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		client = redis.NewClient(o)
	}
	s := &Store{client: client, prefix: cfg.keyPrefix(), timeout: t, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// Close closes the connections.
func (s *Store) Close() error { return s.client.Close() }

// Prefix is Config.KeyPrefix, which starts every key.
func (s *Store) Prefix() string { return s.prefix }

// call runs one command with the timeout, the skip-after-failure rule, the observer and
// the log.
func (s *Store) call(ctx context.Context, op string, f func(ctx context.Context) error) error {
	now := s.now()
	s.mu.Lock()
	skip := now.Before(s.downUntil)
	s.mu.Unlock()
	if skip {
		s.observe(op, "skipped", 0)
		return fmt.Errorf("%w (failed moments ago)", ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	d := time.Since(start)
	if err != nil && !errors.Is(err, redis.Nil) {
		s.observe(op, "error", d)
		s.failure(op, err)
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	s.observe(op, "ok", d)
	s.success()
	return nil
}

func (s *Store) observe(op, result string, d time.Duration) {
	if s.obs != nil {
		s.obs.ObserveSharedCall(op, result, d)
	}
}

func (s *Store) failure(op string, err error) {
	now := s.now()
	s.mu.Lock()
	s.downUntil = now.Add(retryAfter)
	s.down = true
	s.failed++
	logNow := now.Sub(s.lastLog) >= logEvery
	n := s.failed
	if logNow {
		s.lastLog, s.failed = now, 0
	}
	s.mu.Unlock()
	if logNow {
		s.log.Warn("shared store unavailable; using local state", "op", op, "reason", err, "failures", n)
	}
}

func (s *Store) success() {
	s.mu.Lock()
	was := s.down
	s.down = false
	s.mu.Unlock()
	if was {
		s.log.Info("shared store reachable again; sharing state")
	}
}

// Get returns the value of key, or nil (and no error) when there is none.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	var b []byte
	err := s.call(ctx, "get", func(ctx context.Context) error {
		var err error
		b, err = s.client.Get(ctx, s.prefix+key).Bytes()
		return err
	})
	if b == nil && err == nil {
		return nil, nil
	}
	return b, err
}

// Set stores value under key for ttl.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return s.call(ctx, "set", func(ctx context.Context) error {
		return s.client.Set(ctx, s.prefix+key, value, ttl).Err()
	})
}

// SetNX stores value under key for ttl unless key exists; it reports whether it did.
func (s *Store) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	var ok bool
	err := s.call(ctx, "setnx", func(ctx context.Context) error {
		var err error
		// SET NX PX, not SETNX: one command sets the value and its expiry.
		ok, err = s.client.SetNX(ctx, s.prefix+key, value, ttl).Result()
		return err
	})
	return ok, err
}

// Incr adds one to the counter key and (re)sets its expiry to ttl, in one transaction: a
// counter lives ttl after its last increment. It returns the new count.
func (s *Store) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	var n *redis.IntCmd
	err := s.call(ctx, "incr", func(ctx context.Context) error {
		_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			n = p.Incr(ctx, s.prefix+key)
			p.PExpire(ctx, s.prefix+key, ttl)
			return nil
		})
		return err
	})
	if err != nil {
		return 0, err
	}
	return n.Val(), nil
}

// Count returns the counter key (0 when there is none). A value that is not a counter is an
// error, so the caller uses its local count instead.
func (s *Store) Count(ctx context.Context, key string) (int64, error) {
	b, err := s.Get(ctx, key)
	if err != nil || b == nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %s is not a counter", ErrUnavailable, key)
	}
	return n, nil
}

// Delete removes key.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.call(ctx, "del", func(ctx context.Context) error {
		return s.client.Del(ctx, s.prefix+key).Err()
	})
}

// Ready pings the store (/readyz); it is always sent, even moments after a failure.
func (s *Store) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	err := s.client.Ping(ctx).Err()
	if err != nil {
		s.observe("ping", "error", time.Since(start))
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.observe("ping", "ok", time.Since(start))
	return nil
}
