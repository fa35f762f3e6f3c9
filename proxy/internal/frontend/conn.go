package frontend

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/relay"
	"github.com/saslgate/saslgate/tls/binding"
)

// ErrSpliced is what a front end's run returns once the login handed the connection to the
// splice (Splice): the session goes on without it.
var ErrSpliced = errors.New("frontend: session spliced")

// EndWait bounds how long End waits for a connection not yet logged in to see its last line
// and close.
const EndWait = 2 * time.Second

// Conn is one client connection of a front end that splices once logged in (IMAP, POP3,
// ManageSieve): the pre-authentication stream the front end reads and writes, and the
// session's life as proxy.Tracker runs it. A front end embeds it in its own conn, which
// runs the not-authenticated state and calls Splice after a login.
type Conn struct {
	ID     string
	Client backends.Client // the client's address and the one it connected to
	// Log is the connection's logger until the splice, which keeps none (logger).
	Log *slog.Logger
	Obs proxy.Observer

	Raw  net.Conn // the accepted socket
	NC   net.Conn // Raw, or TLS over it
	BR   *bufio.Reader
	BW   *bufio.Writer
	TLS  bool
	Bind proxy.Conn // what the credentials are checked against (TLS state, served certificate)

	bye string // the line a spliced session ends with at a drain; "" for none

	// What Log is made of, for the line that ends a spliced session (logger): a logger's
	// attributes, preformatted by its handler, were about 280 bytes of each idle session.
	log      *slog.Logger // the server's
	listener string
	user     string // set by LoggedIn

	mu      sync.Mutex
	authed  bool           // logged in: which session gauge it is in
	backend net.Conn       // set while spliced, closed by Abort
	spliced *relay.Session // set while spliced
	release func()         // ends the session for the Tracker

	ending   atomic.Bool   // End was called: a read timeout means shutdown
	finished chan struct{} // closed when the session is over
}

// NewConn is the connection of an accepted socket, logging to log with its id and addresses.
// bye is the line, CRLF included, a spliced session gets at the next response boundary when
// a drain ends it; "" when the protocol has none, and the connection then closes at once.
func NewConn(nc net.Conn, id string, log *slog.Logger, listener string, obs proxy.Observer, bye string) Conn {
	return Conn{
		ID:       id,
		Log:      log.With("conn", id, "listener", listener, "remote", nc.RemoteAddr().String()),
		log:      log,
		listener: listener,
		Obs:      obs,
		Raw:      nc,
		NC:       nc,
		Client:   ClientOf(nc),
		bye:      bye,
		finished: make(chan struct{}),
	}
}

// ClientOf is the client's address on nc and the address it connected to, for the backend.
func ClientOf(nc net.Conn) backends.Client {
	return backends.Client{Addr: proxy.ClientAddrPort(nc.RemoteAddr()), Local: proxy.ClientAddrPort(nc.LocalAddr())}
}

// Run runs the connection (proxy.Session's Serve) with run, the front end's not-authenticated
// state. Once logged in, the session goes on in the splice, which ends it; Run returns
// before that.
func (c *Conn) Run(release func(), run func() error) {
	c.release = release
	c.Obs.SessionStarted()
	spliced := false
	defer func() {
		if v := recover(); v != nil {
			c.logger().Error("panic in connection; closed", "panic", v, "stack", string(debug.Stack()))
		}
		if !spliced {
			c.finish()
		}
	}()
	err := run()
	if errors.Is(err, ErrSpliced) {
		spliced = true
		return
	}
	if err != nil {
		c.logger().Debug("connection ended", "reason", err)
	}
}

// Finished is closed once the session is over.
func (c *Conn) Finished() <-chan struct{} { return c.finished }

// Ending reports whether End was called: a read that timed out is the drain's, not the
// client's.
func (c *Conn) Ending() bool { return c.ending.Load() }

// Authed reports whether the client logged in.
func (c *Conn) Authed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authed
}

// Abort closes the client and backend connections (proxy.Session).
func (c *Conn) Abort() {
	c.mu.Lock()
	sp, be := c.spliced, c.backend
	c.mu.Unlock()
	if sp != nil {
		sp.Abort() // first: it takes parked directions back while their sockets are open
	}
	c.Raw.Close()
	if be != nil {
		be.Close()
	}
}

// End ends the connection for a drain (proxy.Session): a spliced session gets the bye line
// at the next response boundary, one not yet logged in gets the front end's line at its next
// read (Ending); then both connections close. Without a bye line a logged-in session closes
// at once. It returns within about EndWait.
func (c *Conn) End() {
	c.ending.Store(true)
	c.mu.Lock()
	sp, authed := c.spliced, c.authed
	c.mu.Unlock()
	switch {
	case authed && c.bye == "":
	case sp != nil:
		sp.End(c.bye)
	default:
		t := time.NewTimer(EndWait)
		defer t.Stop()
		_ = c.Raw.SetReadDeadline(time.Now())
		select {
		case <-c.finished:
		case <-t.C:
		}
	}
	c.Abort()
}

// SetStream makes nc the stream the front end reads and writes.
func (c *Conn) SetStream(nc net.Conn) {
	c.NC = nc
	c.BR = bufio.NewReaderSize(nc, 4096)
	c.BW = bufio.NewWriterSize(nc, 4096)
}

// StartTLS runs the server's TLS handshake with cfg (the listener's: Server.ConnTLS) within
// the listener's handshake timeout, then gives the connection back its pre-authentication
// deadline. The stream is TLS from then on; what was buffered before is dropped.
func (c *Conn) StartTLS(cfg *tls.Config, l proxy.ListenerConfig, preauth time.Time) error {
	served := new(binding.Served)
	// The splice's writes toward the client go out as one write(2) per batch of records.
	tc := tls.Server(relay.Coalesce(c.Raw), cfg)
	c.Raw.SetDeadline(l.HandshakeDeadline(preauth))
	if err := tc.HandshakeContext(binding.WithServed(context.Background(), served)); err != nil {
		return err
	}
	c.Raw.SetDeadline(preauth)
	st := tc.ConnectionState()
	c.TLS, c.Bind = true, proxy.Conn{TLS: &st, Served: served}
	c.SetStream(tc)
	return nil
}

// LoggedIn records the login: the user in the log, and the session in the authenticated
// gauge.
func (c *Conn) LoggedIn(user string) {
	c.user = user
	c.Log = c.Log.With("user", user)
	c.mu.Lock()
	c.authed = true
	c.mu.Unlock()
	c.Obs.SessionAuthenticated()
}

// Splice hands the connection to the splice once the login is answered and returns
// ErrSpliced, for run to return. Client bytes pipelined behind the login, still in BR, go to
// backend first, and backend's, in bbr, to the client. framer follows the client's side
// (relay.Start); nil if the protocol needs none. BR and BW are the splice's from now on.
func (c *Conn) Splice(backend net.Conn, bbr *bufio.Reader, framer relay.Framer) error {
	c.Raw.SetDeadline(time.Time{})
	// Hand the reader to the splice and keep no reference, so its buffer is freed once
	// drained rather than held for the session's life.
	cbr := c.BR
	c.BR, c.BW = nil, nil
	// Nor the logger, made again for the session's last line, nor the TLS state the login
	// checked the credentials against (a copy of crypto/tls's).
	c.Log, c.Bind = nil, proxy.Conn{}
	c.mu.Lock()
	c.backend = backend
	c.spliced = relay.Start(c.NC, cbr, backend, bbr, framer, c.spliceEnded)
	sp := c.spliced
	c.mu.Unlock()
	if c.ending.Load() { // End came during the login: it found no spliced session to end
		if c.bye != "" {
			sp.End(c.bye)
		} else {
			c.Abort()
		}
	}
	return ErrSpliced
}

// finish closes everything and ends the session for the Tracker.
func (c *Conn) finish() {
	c.Abort()
	c.Obs.SessionEnded(c.Authed())
	close(c.finished)
	c.release()
}

// spliceEnded is the end of a logged-in session.
func (c *Conn) spliceEnded(up, down int64) {
	c.logger().Info("session ended", "bytes_up", up, "bytes_down", down)
	c.Obs.Relayed(up, down)
	c.finish()
}

// logger is Log, or once spliced the same logger made again.
func (c *Conn) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	log := c.log.With("conn", c.ID, "listener", c.listener, "remote", c.Raw.RemoteAddr().String())
	if c.Authed() {
		log = log.With("user", c.user)
	}
	return log
}

// IsTimeout reports whether err is a timeout, a read deadline passing.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
