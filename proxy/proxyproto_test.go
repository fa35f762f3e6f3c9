package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/proxy/relay"
)

func TestReadProxyHeader(t *testing.T) {
	v2 := func(src, dst string) []byte {
		return AppendProxyHeaderV2(nil, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst))
	}
	v2local := append(append([]byte{}, proxyV2Sig...), 0x20, 0x00, 0, 0)
	v2unix := append(append([]byte{}, proxyV2Sig...), 0x21, 0x31, 0, 216)
	v2unix = append(v2unix, make([]byte, 216)...)
	withTLV := v2("192.0.2.1:1000", "198.51.100.2:993")
	withTLV[15] += 7 // one 7-byte TLV (type 0x04 NOOP, length 4) after the addresses
	withTLV = append(withTLV, 0x04, 0, 4, 1, 2, 3, 4)
	for _, tc := range []struct {
		name string
		in   []byte
		want ProxyHeader
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 993\r\n"),
			ProxyHeader{Version: 1, Source: netip.MustParseAddrPort("192.0.2.1:56324"), Dest: netip.MustParseAddrPort("198.51.100.2:993")}},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"),
			ProxyHeader{Version: 1, Source: netip.MustParseAddrPort("[2001:db8::1]:65535"), Dest: netip.MustParseAddrPort("[2001:db8::2]:0")}},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), ProxyHeader{Version: 1, Local: true}},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n"), ProxyHeader{Version: 1, Local: true}},
		{"v2 IPv4", v2("192.0.2.1:1000", "198.51.100.2:993"),
			ProxyHeader{Version: 2, Source: netip.MustParseAddrPort("192.0.2.1:1000"), Dest: netip.MustParseAddrPort("198.51.100.2:993")}},
		{"v2 IPv6", v2("[2001:db8::1]:1000", "[2001:db8::2]:465"),
			ProxyHeader{Version: 2, Source: netip.MustParseAddrPort("[2001:db8::1]:1000"), Dest: netip.MustParseAddrPort("[2001:db8::2]:465")}},
		{"v2 with TLV", withTLV,
			ProxyHeader{Version: 2, Source: netip.MustParseAddrPort("192.0.2.1:1000"), Dest: netip.MustParseAddrPort("198.51.100.2:993")}},
		{"v2 LOCAL (health check)", v2local, ProxyHeader{Version: 2, Local: true}},
		{"v2 AF_UNIX: socket addresses stand", v2unix, ProxyHeader{Version: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The header is followed by protocol bytes, which must stay unread.
			r := bufio.NewReader(io.MultiReader(bytes.NewReader(tc.in), strings.NewReader("\x16\x03\x01rest")))
			got, err := ReadProxyHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "\x16\x03\x01rest" {
				t.Errorf("bytes after the header = %q, want them untouched", rest)
			}
		})
	}
}

func TestReadProxyHeaderBad(t *testing.T) {
	v2 := AppendProxyHeaderV2(nil, netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("198.51.100.2:993"))
	set := func(i int, b byte) []byte { c := bytes.Clone(v2); c[i] = b; return c }
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no header (TLS ClientHello)", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc", "no PROXY signature"},
		{"IMAP command", "A1 CAPABILITY\r\n", "no PROXY signature"},
		{"empty", "", "EOF"},
		{"v1 truncated", "PROXY TCP4 192.0.2.1", "EOF"},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n", "longer than 107"},
		{"v1 LF only", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n", "CRLF"},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n", "address"},
		{"v1 bad family", "PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n", "v1 line"},
		{"v1 port out of range", "PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n", "port"},
		{"v1 port leading zero", "PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n", "port"},
		{"v1 port sign", "PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n", "port"},
		{"v1 double space", "PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n", "v1 line"},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", "address"},
		{"v2 version 3", string(set(12, 0x31)), "version 3"},
		{"v2 command 2", string(set(12, 0x22)), "command"},
		{"v2 transport 3", string(set(13, 0x13)), "transport"},
		{"v2 block too short", string(set(15, 4))[:16+4], "too short"},
		{"v2 block over limit", string(set(14, 0xff)), "at most"},
		{"v2 truncated block", string(v2[:20]), "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadProxyHeader(strings.NewReader(tc.in))
			if !errors.Is(err, ErrProxyHeader) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrProxyHeader containing %q", err, tc.want)
			}
		})
	}
}

// FuzzReadProxyHeader: any input either parses, to addresses that round-trip through v2, or
// fails with ErrProxyHeader; the reader never consumes more than the header.
func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 993\r\nA1 NOOP\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(AppendProxyHeaderV2(nil, netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:2")))
	f.Add(append(append([]byte{}, proxyV2Sig...), 0x20, 0x00, 0, 0))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ReadProxyHeader(r)
		if err != nil {
			if !errors.Is(err, ErrProxyHeader) {
				t.Fatalf("error %v does not wrap ErrProxyHeader", err)
			}
			return
		}
		used := len(in) - r.Len()
		if h.Version == 1 && (used > proxyV1Max || in[used-1] != '\n') {
			t.Fatalf("v1 header consumed %d bytes ending %q", used, in[used-1])
		}
		if h.Version == 2 && used > 16+proxyV2Max {
			t.Fatalf("v2 header consumed %d bytes", used)
		}
		if h.Source.IsValid() != h.Dest.IsValid() || (h.Local && h.Source.IsValid()) {
			t.Fatalf("inconsistent header %+v", h)
		}
		if h.Source.IsValid() && h.Source.Addr().Is4() == h.Dest.Addr().Is4() {
			again, err := ReadProxyHeader(bytes.NewReader(AppendProxyHeaderV2(nil, h.Source, h.Dest)))
			if err != nil || again.Source != h.Source || again.Dest != h.Dest {
				t.Fatalf("v2 round trip of %+v = %+v, %v", h, again, err)
			}
		}
	})
}

// A PROXY-protocol connection holds no bytes of its own, so the splice parks the socket
// under it.
var _ relay.Passthrough = (*proxiedConn)(nil)
