package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrProxyHeader is wrapped by every error ReadProxyHeader returns for a malformed header.
var ErrProxyHeader = errors.New("proxy: bad PROXY protocol header")

// ProxyHeader is a parsed PROXY protocol header (HAProxy's proxy-protocol.txt, v1 and v2).
type ProxyHeader struct {
	// Version is 1 or 2.
	Version int
	// Local is true for a v2 LOCAL command and a v1 "UNKNOWN" line: the connection was
	// made by the proxy itself (health checks) and the socket's own addresses stand.
	Local bool
	// Source and Dest are the client's address and the one it connected to; invalid when
	// Local, or when the v2 address family is neither TCP/UDP over IPv4 nor IPv6.
	Source, Dest netip.AddrPort
}

// proxyV2Sig is the 12-byte v2 signature (proxy-protocol.txt §2.2).
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	// proxyV1Max is the longest v1 line, CRLF included (§2.1: 107 bytes).
	proxyV1Max = 107
	// proxyV2Max bounds the v2 address block saslgate accepts: addresses plus TLVs. The format
	// allows 65535; real proxies send a few hundred bytes at most.
	proxyV2Max = 4096
	// ProxyHeaderTimeout bounds the wait for the header after accept.
	ProxyHeaderTimeout = 10 * time.Second
)

// ReadProxyHeader reads one PROXY protocol header, v1 or v2, from r and nothing beyond it, so r
// can then be handed to TLS or the protocol. It reads byte-exact: v1 one byte at a time up to
// its LF, v2 its fixed 16 bytes and then exactly the length they announce.
func ReadProxyHeader(r io.Reader) (ProxyHeader, error) {
	// Both versions have at least 8 bytes: the shortest v1 line is "PROXY UNKNOWN\r\n".
	var start [16]byte
	if _, err := io.ReadFull(r, start[:8]); err != nil {
		return ProxyHeader{}, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	switch {
	case bytes.Equal(start[:8], proxyV2Sig[:8]):
		if _, err := io.ReadFull(r, start[8:16]); err != nil {
			return ProxyHeader{}, fmt.Errorf("%w: %w", ErrProxyHeader, err)
		}
		return readProxyV2(r, start)
	case string(start[:6]) == "PROXY ":
		return readProxyV1(r, start[:8])
	}
	return ProxyHeader{}, fmt.Errorf("%w: no PROXY signature", ErrProxyHeader)
}

func readProxyV1(r io.Reader, start []byte) (ProxyHeader, error) {
	line := make([]byte, len(start), proxyV1Max)
	copy(line, start)
	var b [1]byte
	for line[len(line)-1] != '\n' {
		if len(line) == proxyV1Max {
			return ProxyHeader{}, fmt.Errorf("%w: v1 line longer than %d bytes", ErrProxyHeader, proxyV1Max)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return ProxyHeader{}, fmt.Errorf("%w: %w", ErrProxyHeader, err)
		}
		line = append(line, b[0])
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return ProxyHeader{}, fmt.Errorf("%w: v1 line does not end in CRLF", ErrProxyHeader)
	}
	return parseProxyV1(string(line[:len(line)-2]))
}

// parseProxyV1 parses "PROXY TCP4|TCP6 src dst sport dport" or "PROXY UNKNOWN[ anything]"
// (§2.1: for UNKNOWN "the receiver must ignore anything presented before the CRLF").
func parseProxyV1(line string) (ProxyHeader, error) {
	f := strings.Split(line, " ")
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return ProxyHeader{Version: 1, Local: true}, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return ProxyHeader{}, fmt.Errorf("%w: v1 line %.60q", ErrProxyHeader, line)
	}
	h := ProxyHeader{Version: 1}
	for i, dst := range []*netip.AddrPort{&h.Source, &h.Dest} {
		ip, err := netip.ParseAddr(f[2+i])
		if err != nil || ip.Zone() != "" || ip.Is4() != (f[1] == "TCP4") {
			return ProxyHeader{}, fmt.Errorf("%w: v1 %s address %.50q", ErrProxyHeader, f[1], f[2+i])
		}
		port, err := parsePort(f[4+i])
		if err != nil {
			return ProxyHeader{}, fmt.Errorf("%w: v1 port %.10q", ErrProxyHeader, f[4+i])
		}
		*dst = netip.AddrPortFrom(ip, port)
	}
	return h, nil
}

// parsePort parses a v1 port: decimal 0-65535 without a sign or leading zeros (§2.1).
func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') || s[0] < '0' || s[0] > '9' {
		return 0, errors.New("bad port")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

func readProxyV2(r io.Reader, hdr [16]byte) (ProxyHeader, error) {
	if !bytes.Equal(hdr[:12], proxyV2Sig) {
		return ProxyHeader{}, fmt.Errorf("%w: bad v2 signature", ErrProxyHeader)
	}
	if hdr[12]>>4 != 2 {
		return ProxyHeader{}, fmt.Errorf("%w: v2 version %d", ErrProxyHeader, hdr[12]>>4)
	}
	n := int(binary.BigEndian.Uint16(hdr[14:16]))
	if n > proxyV2Max {
		return ProxyHeader{}, fmt.Errorf("%w: v2 address block of %d bytes (at most %d)", ErrProxyHeader, n, proxyV2Max)
	}
	block := make([]byte, n)
	if _, err := io.ReadFull(r, block); err != nil {
		return ProxyHeader{}, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	h := ProxyHeader{Version: 2}
	switch hdr[12] & 0xf {
	case 0x0: // LOCAL: §2.2 "the receiver must accept this connection as valid and must use the
		// real connection endpoints and discard the protocol block including the family".
		h.Local = true
		return h, nil
	case 0x1: // PROXY
	default:
		return ProxyHeader{}, fmt.Errorf("%w: v2 command %#x", ErrProxyHeader, hdr[12]&0xf)
	}
	// Byte 13: address family (high nibble) and transport (low). TLVs after the addresses
	// are skipped: saslgate needs none of them.
	var alen int
	switch hdr[13] >> 4 {
	case 0x1: // AF_INET
		alen = 4
	case 0x2: // AF_INET6
		alen = 16
	default: // AF_UNSPEC, AF_UNIX: §2.2 says use the socket's addresses.
		return h, nil
	}
	if t := hdr[13] & 0xf; t != 0x1 && t != 0x2 {
		return ProxyHeader{}, fmt.Errorf("%w: v2 transport %#x", ErrProxyHeader, t)
	}
	if n < 2*alen+4 {
		return ProxyHeader{}, fmt.Errorf("%w: v2 address block of %d bytes too short", ErrProxyHeader, n)
	}
	src, _ := netip.AddrFromSlice(block[:alen])
	dst, _ := netip.AddrFromSlice(block[alen : 2*alen])
	h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(block[2*alen:]))
	h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(block[2*alen+2:]))
	return h, nil
}

// AppendProxyHeaderV2 appends a v2 PROXY command for a TCP connection from src to dst (both
// IPv4 or both IPv6), as a load balancer sends it; for tests and tools.
func AppendProxyHeaderV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxyV2Sig...)
	fam, addrs := byte(0x11), 12
	if !src.Addr().Unmap().Is4() {
		fam, addrs = 0x21, 36
	}
	b = append(b, 0x21, fam, 0, byte(addrs))
	if fam == 0x11 {
		s, d := src.Addr().Unmap().As4(), dst.Addr().Unmap().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// proxiedConn is an accepted connection whose client address came from a PROXY header.
type proxiedConn struct {
	net.Conn
	remote, local net.Addr
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }
func (c *proxiedConn) LocalAddr() net.Addr  { return c.local }

// Wrapped is the accepted connection: a proxiedConn holds no bytes of its own (the header
// was read byte by byte), so a spliced session behind a balancer parks its socket like any
// other (relay.Passthrough). Without it, idle sessions behind HAProxy kept two goroutines.
func (c *proxiedConn) Wrapped() net.Conn { return c.Conn }

// acceptProxy reads the PROXY header of nc, a connection from a trusted peer, within
// ProxyHeaderTimeout, and returns the connection with the header's addresses.
func acceptProxy(nc net.Conn) (net.Conn, error) {
	_ = nc.SetReadDeadline(time.Now().Add(ProxyHeaderTimeout))
	h, err := ReadProxyHeader(nc)
	_ = nc.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	if h.Local || !h.Source.IsValid() {
		return nc, nil
	}
	return &proxiedConn{Conn: nc, remote: net.TCPAddrFromAddrPort(h.Source), local: net.TCPAddrFromAddrPort(h.Dest)}, nil
}

// ClientAddr returns the IP address of a connection's client (net.Conn.RemoteAddr, which is
// the PROXY header's source on a proxy_protocol listener), IPv4-mapped IPv6 unmapped.
func ClientAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ClientAddrPort is ClientAddr with the port.
func ClientAddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
