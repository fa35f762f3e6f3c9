package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/saslgate/saslgate/bench/internal/floor"
)

// The floor of issue #20 (package bench/internal/floor): the least a Go program does for
// the exchange that BenchmarkGatewayProcess makes, run in the same child process and
// measured the same way, so that what saslgate spends above it is its own and what is left
// below it is Go's and the kernel's. Mode "floor" is floor.Serve with TLS in front of the
// scripted backend (which needs no login), "plain" the same without TLS, and "handshake"
// only the TLS handshake and the greeting (imapbench's "handshake only" row).

// dialBackend is the floor's Login for the scripted backend: a connection.
func dialBackend(backend string) floor.Login {
	return func([]byte) (net.Conn, error) { return net.Dial("tcp", backend) }
}

// serveHandshake serves ln as mode "handshake": the TLS handshake, the greeting, and the
// connection held until the client closes it.
func serveHandshake(ln net.Listener, cfg *tls.Config) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			c := tls.Server(raw, cfg)
			defer c.Close()
			if _, err := io.WriteString(c, "* OK handshake\r\n"); err != nil {
				return
			}
			io.Copy(io.Discard, c)
		}()
	}
}

// BenchmarkFloorSeal is the cipher of bulk data alone: AES-128-GCM sealing 16 KiB
// records, what crypto/tls does to every byte relayed to a client (TLS_AES_128_GCM_SHA256).
// cpu-s/GB is comparable with BenchmarkGatewayProcess's proxy-cpu-s/GB.
func BenchmarkFloorSeal(b *testing.B) {
	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	const record = 16 << 10
	src := make([]byte, record+1)
	dst := make([]byte, 0, record+1+aead.Overhead())
	nonce := make([]byte, aead.NonceSize())
	b.SetBytes(record)
	cpu := startCPU()
	for b.Loop() {
		nonce[0]++
		dst = aead.Seal(dst[:0], nonce, src, nil)
	}
	cpu.reportPerGB(b, record)
}

// BenchmarkFloorKeyExchange is a TLS 1.3 server's key exchange alone, for each group a
// client may offer: a key pair and the shared secret (X25519, P-256), or an ML-KEM-768
// encapsulation (the post-quantum half of X25519MLKEM768, Go's default first choice).
func BenchmarkFloorKeyExchange(b *testing.B) {
	for _, curve := range []struct {
		name string
		c    ecdh.Curve
	}{{"X25519", ecdh.X25519()}, {"P-256", ecdh.P256()}} {
		b.Run(curve.name, func(b *testing.B) {
			peer, err := curve.c.GenerateKey(rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				priv, err := curve.c.GenerateKey(rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := priv.ECDH(peer.PublicKey()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("ML-KEM-768", func(b *testing.B) {
		dk, err := mlkem.GenerateKey768()
		if err != nil {
			b.Fatal(err)
		}
		ek := dk.EncapsulationKey().Bytes()
		for b.Loop() {
			k, err := mlkem.NewEncapsulationKey768(ek)
			if err != nil {
				b.Fatal(err)
			}
			k.Encapsulate()
		}
	})
}

// BenchmarkFloorHandshakeCrypto is the public-key work of a full TLS 1.3 server
// handshake with the bench's parameters, alone: an X25519 key pair and shared secret and an
// ECDSA P-256 signature of a SHA-256 digest.
func BenchmarkFloorHandshakeCrypto(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	peer, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("transcript"))
	cpu := startCPU()
	for b.Loop() {
		priv, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := priv.ECDH(peer.PublicKey()); err != nil {
			b.Fatal(err)
		}
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	cpu.reportPerOp(b, "cpu-ms/handshake")
}
