package passwd

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"strings"
)

// Schemes, as Dovecot names them (doveadm pw -l).
const (
	// SHA512Crypt is crypt(3) $6$ with a 16-character salt and DefaultRounds rounds: what
	// Dovecot's own `doveadm pw` produces by default.
	SHA512Crypt = "SHA512-CRYPT"
	// SSHA512 is SHA-512 over the secret and a 16-byte salt. Fast, and enough here:
	// saslgate's derived secrets carry 256 random bits, which no dictionary or brute-force
	// search recovers from a leaked hash. Not for secrets people choose.
	SSHA512 = "SSHA512"
)

// DefaultRounds is the SHA512-CRYPT round count (crypt(3)'s default). Each proxied login costs
// the backend one verification: about a millisecond at this count.
const DefaultRounds = 5000

// Schemes lists the supported schemes, the default first.
var Schemes = []string{SHA512Crypt, SSHA512}

// Hash returns secret hashed with scheme (case-insensitive), with Dovecot's {SCHEME} prefix.
func Hash(scheme, secret string) (string, error) {
	switch strings.ToUpper(scheme) {
	case SHA512Crypt:
		return "{" + SHA512Crypt + "}" + sha512Crypt([]byte(secret), randomSalt(), DefaultRounds), nil
	case SSHA512:
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		sum := sha512.Sum512(append([]byte(secret), salt...))
		return "{" + SSHA512 + "}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...)), nil
	}
	return "", fmt.Errorf("passwd: unknown scheme %q (want one of %s)", scheme, strings.Join(Schemes, ", "))
}

// DovecotLine is one Dovecot passwd-file line (user:password, the other fields empty) for user
// with the already hashed password. The user must not contain ':' or a line break.
func DovecotLine(user, hashed string) (string, error) {
	if user == "" || strings.ContainsAny(user, ":\r\n\x00") {
		return "", fmt.Errorf("passwd: user %q cannot be written to a passwd-file", user)
	}
	return user + ":" + hashed, nil
}

// crypt64 is crypt(3)'s base64 alphabet.
const crypt64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomSalt() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = crypt64[b[i]&0x3f]
	}
	return b
}

// sha512Crypt implements the SHA-512 variant of Ulrich Drepper's "Unix crypt using SHA-256
// and SHA-512" (the specification's numbered steps are cited). salt is at most 16 bytes.
func sha512Crypt(key, salt []byte, rounds int) string {
	// Step 4-8: digest B = SHA512(key salt key).
	b := sha512.New()
	b.Write(key)
	b.Write(salt)
	b.Write(key)
	sumB := b.Sum(nil)

	// Steps 1-3, 9-12: digest A.
	a := sha512.New()
	a.Write(key)
	a.Write(salt)
	n := len(key)
	for ; n > 64; n -= 64 {
		a.Write(sumB)
	}
	a.Write(sumB[:n])
	for i := len(key); i > 0; i >>= 1 {
		if i&1 != 0 {
			a.Write(sumB)
		} else {
			a.Write(key)
		}
	}
	sumA := a.Sum(nil)

	// Steps 13-16: byte sequence P from the key repeated len(key) times.
	dp := sha512.New()
	for range len(key) {
		dp.Write(key)
	}
	sumDP := dp.Sum(nil)
	p := make([]byte, 0, len(key))
	for len(p)+64 <= len(key) {
		p = append(p, sumDP...)
	}
	p = append(p, sumDP[:len(key)-len(p)]...)

	// Steps 17-20: byte sequence S from the salt repeated 16+A[0] times.
	ds := sha512.New()
	for range 16 + int(sumA[0]) {
		ds.Write(salt)
	}
	s := ds.Sum(nil)[:len(salt)]

	// Step 21: the rounds.
	c := sumA
	for i := range rounds {
		h := sha512.New()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(nil)
	}

	// Step 22: "$6$[rounds=N$]salt$" and the digest in crypt(3)'s byte order and alphabet.
	var out strings.Builder
	out.WriteString("$6$")
	if rounds != DefaultRounds {
		fmt.Fprintf(&out, "rounds=%d$", rounds)
	}
	out.Write(salt)
	out.WriteByte('$')
	for _, t := range sha512Order {
		w := uint(c[t[0]])<<16 | uint(c[t[1]])<<8 | uint(c[t[2]])
		for range 4 {
			out.WriteByte(crypt64[w&0x3f])
			w >>= 6
		}
	}
	w := uint(c[63])
	for range 2 {
		out.WriteByte(crypt64[w&0x3f])
		w >>= 6
	}
	return out.String()
}

// sha512Order is the specification's byte order for encoding the final digest, three bytes
// at a time; byte 63 comes last on its own.
var sha512Order = [21][3]int{
	{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
	{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13},
	{56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41},
}
