//go:build linux

// Command imapbench measures saslgate against nginx's mail proxy and against
// Dovecot directly, on this machine, in one run: bulk FETCH throughput, login
// rate, memory per idle session and round-trip time per command. It starts
// everything itself on loopback (Dovecot, an OpenID issuer, saslgate built
// from this module, nginx with an auth_http responder), prints a markdown
// report and profiles a pprof-enabled twin of saslgate built from the same
// packages. `make bench` runs it; see bench/README.md.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/tls/certs"
)

type benchConfig struct {
	root         string
	out          string
	sessions     int
	msgBytes     int
	bulkMessages int
	passes       int
	loginDur     time.Duration
	conc         int
	noops        int
	settle       time.Duration
	users        int
	phases       map[string]bool
	keep         bool

	files         uint64 // RLIMIT_NOFILE of this process and its children
	fileLimitNote string // why sessions was lowered, for the report
}

type mailUser struct {
	name     string // mailbox and token email, user@example.com
	secret   string // HMAC-derived backend secret (Dovecot passdb)
	password string // what an nginx client types; auth_http checks it
	token    string // RS256 JWT access token for saslgate
}

// world is everything one run starts.
type world struct {
	cfg       benchConfig
	dir       string
	certFile  string
	keyFile   string
	clientTLS *tls.Config

	hmacKeyFile string
	users       []*mailUser // login and idle users, small INBOX each
	bulk        *mailUser   // owner of the large messages
	bulkBytes   int64

	issuerURL   string
	saslgateBin string
	dovecot     *dovecot
	nginx       *nginx
	gate        *gate // cached validation
	gateNoCache *gate // tokens.cache.disabled
	floor       *gate // `imapbench floor`: the least a Go gateway does (issue #20)
	procs       []func()
	cleanup     []func()
}

func (c benchConfig) phase(name string) bool { return c.phases[name] }

func (w *world) allUsers() []*mailUser { return append([]*mailUser{w.bulk}, w.users...) }

func main() {
	subcommands := map[string]func(args []string) error{"twin": twinMain, "floor": floorMain}
	if len(os.Args) > 1 && subcommands[os.Args[1]] != nil {
		if err := subcommands[os.Args[1]](os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "imapbench %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	var cfg benchConfig
	var bulkMB, msgMB int
	flag.StringVar(&cfg.root, "root", ".", "saslgate module `dir` (where go.mod is)")
	flag.StringVar(&cfg.out, "out", "bench/out", "`dir` for results.md, profiles and logs")
	flag.IntVar(&cfg.sessions, "sessions", 10000, "idle sessions held open per proxy")
	flag.IntVar(&bulkMB, "bulk-mb", 256, "size of the bulk mailbox in MiB")
	flag.IntVar(&msgMB, "msg-mb", 8, "size of each bulk message in MiB")
	flag.IntVar(&cfg.passes, "passes", 3, "bulk FETCH passes per path")
	flag.DurationVar(&cfg.loginDur, "login-time", 5*time.Second, "duration of each login-rate run")
	flag.IntVar(&cfg.conc, "clients", 64, "concurrent clients in the parallel login run and for opening idle sessions")
	flag.IntVar(&cfg.noops, "noops", 3000, "NOOP round trips per path")
	flag.DurationVar(&cfg.settle, "idle-settle", 12*time.Second, "how long the idle sessions sit before RSS is read "+
		"(longer than any idle-parking delay of the proxy under test)")
	flag.IntVar(&cfg.users, "users", 100, "mailbox users the login and idle clients rotate over")
	phases := flag.String("phases", "bulk,login,noop,idle,profile", "comma-separated `list` of what to run "+
		"(profile: CPU profiles of bulk and logins and a heap profile of idle sessions, on a pprof-enabled twin of saslgate)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temp dir (configs, logs)")
	flag.Parse()
	cfg.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		cfg.phases[strings.TrimSpace(p)] = true
	}
	cfg.msgBytes = msgMB << 20
	cfg.bulkMessages = max(1, bulkMB/msgMB)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "imapbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg benchConfig) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: Dovecot drops to its own users and nginx runs as root here")
	}
	const wantFiles = 200000
	files, err := raiseFileLimit(wantFiles)
	if err != nil {
		return err
	}
	cfg.files = files
	// A proxy splicing n sessions holds 2n sockets plus a few descriptors of
	// its own (listeners, log, epoll, the issuer connection).
	if most := int(files-64) / 2; cfg.sessions > most {
		cfg.fileLimitNote = fmt.Sprintf("%d instead of %d idle sessions: the open-files hard limit here is %d "+
			"and cannot be raised (no CAP_SYS_RESOURCE); one proxy process needs 2 descriptors per session",
			most, cfg.sessions, files)
		progress("%s", cfg.fileLimitNote)
		cfg.sessions = most
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	w := &world{cfg: cfg}
	defer w.stop()
	if err := w.start(ctx); err != nil {
		return err
	}
	rep := &report{w: w, started: time.Now()}
	if err := rep.collect(ctx); err != nil {
		rep.failure = err
	}
	md := rep.markdown()
	fmt.Print(md)
	path := filepath.Join(cfg.out, "results.md")
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "imapbench: wrote", path)
	return rep.failure
}

func (w *world) start(ctx context.Context) error {
	var err error
	if w.dir, err = os.MkdirTemp("", "saslgate-bench-"); err != nil {
		return err
	}
	progress("building ./cmd/saslgate")
	if w.saslgateBin, err = buildSaslgate(w.cfg.root, w.dir); err != nil {
		return err
	}
	if err := w.writeCert(); err != nil {
		return err
	}
	w.hmacKeyFile = filepath.Join(w.dir, "hmac.key")
	key, err := backends.NewHMACKeyFile(w.hmacKeyFile)
	if err != nil {
		return err
	}
	mk := func(name string) *mailUser {
		return &mailUser{name: name, secret: backends.DeriveSecret(key, name).Reveal(), password: "pw-" + name}
	}
	w.bulk = mk("bulk@example.com")
	for i := range w.cfg.users {
		w.users = append(w.users, mk(fmt.Sprintf("u%03d@example.com", i)))
	}
	if err := w.startIssuer(); err != nil {
		return err
	}

	progress("seeding %d × %d MiB and starting Dovecot", w.cfg.bulkMessages, w.cfg.msgBytes>>20)
	w.dovecot, err = startDovecot(ctx, w)
	if w.dovecot != nil && w.dovecot.proc != nil {
		w.procs = append(w.procs, w.dovecot.proc.stop)
	}
	if err != nil {
		return err
	}
	progress("starting nginx and saslgate")
	authAddr, err := w.startAuthHTTP()
	if err != nil {
		return err
	}
	w.nginx, err = startNginx(ctx, w, authAddr)
	if w.nginx != nil {
		w.procs = append(w.procs, func() { w.nginx.proc.stop() })
	}
	if err != nil {
		return err
	}
	for _, g := range []struct {
		dst      **gate
		name     string
		disabled bool
	}{{&w.gate, "saslgate", false}, {&w.gateNoCache, "saslgate-nocache", true}} {
		*g.dst, err = w.startGate(ctx, g.name, g.disabled, false)
		if *g.dst != nil {
			gg := *g.dst
			w.procs = append(w.procs, func() { gg.proc.stop() })
		}
		if err != nil {
			return err
		}
	}
	w.floor, err = w.startFloor(ctx)
	if w.floor != nil {
		w.procs = append(w.procs, func() { w.floor.proc.stop() })
	}
	return err
}

func (w *world) stop() {
	for i := len(w.procs) - 1; i >= 0; i-- {
		w.procs[i]()
	}
	for _, f := range w.cleanup {
		f()
	}
	if w.dir == "" {
		return
	}
	// Keep the configs and the logs' tails next to the results.
	for _, name := range []string{"saslgate.log", "saslgate-nocache.log", "twin.log", "twin-nocache.log", "twin-idle.log", "floor.log",
		"dovecot.log", "nginx-error.log", "nginx.out", "dovecot.conf", "nginx.conf", "saslgate.yaml"} {
		if _, err := os.Stat(filepath.Join(w.dir, name)); err == nil {
			_ = os.MkdirAll(filepath.Join(w.cfg.out, "logs"), 0o755)
			_ = os.WriteFile(filepath.Join(w.cfg.out, "logs", name), []byte(tailFile(filepath.Join(w.dir, name), 64<<10)+"\n"), 0o644)
		}
	}
	if w.cfg.keep {
		fmt.Fprintln(os.Stderr, "imapbench: kept", w.dir)
		return
	}
	os.RemoveAll(w.dir)
}

// writeCert writes one self-signed ECDSA P-256 certificate that all three
// TLS servers use; the client pins it (cheaper than chain verification,
// which would load the shared CPUs with client-side work).
func (w *world) writeCert() error {
	cert, certPEM, err := certs.SelfSigned("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	w.certFile, w.keyFile = filepath.Join(w.dir, "cert.pem"), filepath.Join(w.dir, "key.pem")
	if err := os.WriteFile(w.certFile, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(w.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	der := cert.Certificate[0]
	w.clientTLS = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// X25519 everywhere: OpenSSL 3.0 (nginx, Dovecot) has no ML-KEM, and
		// Go's default hybrid key share would make only saslgate's
		// handshakes more expensive.
		CurvePreferences:   []tls.CurveID{tls.X25519},
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || string(cs.PeerCertificates[0].Raw) != string(der) {
				return errors.New("server certificate is not the bench certificate")
			}
			return nil
		},
	}
	return nil
}

// startIssuer serves the demo issuer (discovery, JWKS) on loopback and mints
// one token per user.
func (w *world) startIssuer() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.issuerURL = "http://" + ln.Addr().String()
	iss, err := demoissuer.New(w.issuerURL, nil, demoissuer.WithAudience("saslgate"), demoissuer.WithTTL(6*time.Hour))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	w.cleanup = append(w.cleanup, func() { srv.Close() })
	for _, u := range w.allUsers() {
		sub, _, _ := strings.Cut(u.name, "@")
		if u.token, err = iss.Mint(demoissuer.Claims{Subject: sub, Email: u.name}); err != nil {
			return err
		}
	}
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "imapbench: %s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
