package backends

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// StaticConfig is the "static" source: a map file of user or @domain to a pool or a server.
//
//	# comments and blank lines are ignored
//	alice@example.com   shard1                  # a pool of the protocol being served
//	@example.org        mail3.internal:143      # a server, host or host:port
//
// A value names a pool when one has that name (pool names have no '.' or ':'), and a server
// otherwise. A user is looked up as written, then in lower case, then as @ and its domain in
// lower case. The file is re-read when its size or modification time changes (checked at most
// once a second); a file that no longer parses is logged and the last good one kept.
type StaticConfig struct {
	File string `yaml:"file"`
}

// Validate checks the section; the file itself is read by NewStaticSource.
func (c StaticConfig) Validate() error {
	if c.File == "" {
		return errors.New("static: file: required")
	}
	return nil
}

// maxStaticLine bounds a line of a static map.
const maxStaticLine = 4096

// staticSource serves a static map file.
type staticSource struct {
	file string
	log  *slog.Logger

	mu      sync.Mutex
	m       map[string]string
	size    int64
	mtime   time.Time
	checked time.Time
}

// NewStaticSource reads the map file; an unreadable or malformed file is an error.
func NewStaticSource(c StaticConfig, log *slog.Logger) (Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &staticSource{file: c.File, log: log}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.checked = time.Now()
	return s, nil
}

func (*staticSource) Name() string { return "static" }

func (s *staticSource) Lookup(_ context.Context, q Query) (Answer, bool, error) {
	s.mu.Lock()
	if now := time.Now(); now.Sub(s.checked) >= time.Second {
		s.checked = now
		if fi, err := os.Stat(s.file); err != nil || fi.Size() != s.size || !fi.ModTime().Equal(s.mtime) {
			if err := s.load(); err != nil {
				s.log.Error("static route map not reloaded; the last good one is kept", "file", s.file, "reason", err)
			} else {
				s.log.Info("static route map reloaded", "file", s.file, "entries", len(s.m))
			}
		}
	}
	m := s.m
	s.mu.Unlock()
	v, ok := m[q.User]
	if !ok {
		v, ok = m[strings.ToLower(q.User)]
	}
	if !ok {
		if at := strings.LastIndexByte(q.User, '@'); at >= 0 {
			v, ok = m[strings.ToLower(q.User[at:])]
		}
	}
	if !ok {
		return Answer{}, false, nil
	}
	if validPoolName(v) {
		return Answer{Pool: v}, true, nil
	}
	return Answer{Server: v}, true, nil
}

// load reads and parses the file; s.mu is held (or s is not shared yet).
func (s *staticSource) load() error {
	f, err := os.Open(s.file)
	if err != nil {
		return fmt.Errorf("static: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("static: %w", err)
	}
	m, err := parseStaticMap(f, s.file)
	if err != nil {
		return err
	}
	s.m, s.size, s.mtime = m, fi.Size(), fi.ModTime()
	return nil
}

// parseStaticMap parses a map file: "key value" lines, every problem named by line.
func parseStaticMap(r interface{ Read([]byte) (int, error) }, name string) (map[string]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxStaticLine)
	m := map[string]string{}
	var errs []error
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("static: %s:%d: "+format, append([]any{name, n}, args...)...))
		}
		if len(fields) != 2 {
			bad("want a user or @domain and a pool or server, got %d fields", len(fields))
			continue
		}
		key, val := fields[0], fields[1]
		if strings.ContainsFunc(key, isControl) || len(key) > maxUsernameLen {
			bad("key %q has control characters or is too long", sanitize(key))
			continue
		}
		if strings.HasPrefix(key, "@") {
			key = strings.ToLower(key)
		}
		if !validPoolName(val) {
			if _, _, err := SplitServer(val); err != nil {
				bad("%v", err)
				continue
			}
		}
		if _, dup := m[key]; dup {
			bad("%q is listed twice", key)
			continue
		}
		m[key] = val
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("static: %s: %w", name, err))
	}
	return m, errors.Join(errs...)
}
