package shared

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saslgate/saslgate/internal/config"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{"none", Config{}, nil},
		{"address", Config{Address: "127.0.0.1:6379"}, nil},
		{"sentinel", Config{Sentinel: SentinelConfig{MasterName: "m", Addresses: []string{"s1:26379"}}, LimiterFail: "closed"}, nil},
		{"settings without address", Config{PasswordFile: "/x"}, []string{"shared.address"}},
		{"bad address", Config{Address: "redis"}, []string{"shared.address \"redis\""}},
		{"both", Config{Address: "a:1", Sentinel: SentinelConfig{MasterName: "m", Addresses: []string{"s:1"}}}, []string{"exclusive"}},
		{"sentinel without addresses", Config{Sentinel: SentinelConfig{MasterName: "m"}}, []string{"shared.sentinel.addresses"}},
		{"every bad field", Config{Address: "a:1", DB: -1, Timeout: config.Duration(-1), LimiterFail: "maybe", KeyPrefix: "a b", TLS: TLSConfig{CAFile: "/ca"}},
			[]string{"shared.db", "shared.timeout", "shared.limiter_fail", "shared.key_prefix", "shared.tls.enabled"}},
		{"long timeout", Config{Address: "a:1", Timeout: config.Duration(time.Minute)}, []string{"shared.timeout"}},
	} {
		err := tc.cfg.Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: valid, want %q", tc.name, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to name %q", tc.name, err, w)
			}
		}
	}
}

func TestPasswordFileRule(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Address: "127.0.0.1:1", PasswordFile: f}); err == nil || !strings.Contains(err.Error(), "shared.password_file") {
		t.Errorf("a world-readable password file: %v, want refused", err)
	}
	os.Chmod(f, 0o600)
	c := Config{Address: "127.0.0.1:1", PasswordFile: f}
	if pw, err := c.password(); err != nil || pw != "s3cret" {
		t.Errorf("password = %q, %v", pw, err)
	}
}

type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) ObserveSharedCall(op, result string, _ time.Duration) {
	c.mu.Lock()
	c.n[op+" "+result]++
	c.mu.Unlock()
}

// A store that refuses connections fails each call fast, skips the calls of the next moment,
// counts them, logs once, and is tried again after retryAfter.
func TestStoreUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	obs := &calls{n: map[string]int{}}
	var logs bytes.Buffer
	s, err := New(Config{Address: addr}, WithObserver(obs), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Unix(1_700_000_000, 0)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	start := time.Now()
	if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get = %v, want ErrUnavailable", err)
	}
	if _, err := s.Incr(ctx, "k", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Incr = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("two calls to a closed port took %v", d)
	}
	now = now.Add(retryAfter)
	if _, err := s.Count(ctx, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Count = %v", err)
	}
	want := map[string]int{"get error": 2, "incr skipped": 1}
	for k, n := range want {
		if obs.n[k] != n {
			t.Errorf("observed %v, want %s %d times", obs.n, k, n)
		}
	}
	if n := strings.Count(logs.String(), "shared store unavailable"); n != 1 {
		t.Errorf("%d log lines for 2 failures within %v, want 1:\n%s", n, logEvery, logs.String())
	}
	if err := s.Ready(ctx); err == nil {
		t.Error("Ready with no store: nil")
	}
	// Keys get the prefix.
	if s.Prefix() != DefaultKeyPrefix {
		t.Errorf("prefix %q", s.Prefix())
	}
}
