package passwd

import (
	"crypto/sha512"
	"encoding/base64"
	"os/exec"
	"strings"
	"testing"
)

const secret = "q0Zx3a1m2cP5yJ8vW7nR4tK6hL9sD0fG2bN5xC8vZ1A"

// The test vectors of Drepper's specification, SHA-512 part.
func TestSHA512CryptSpecVectors(t *testing.T) {
	cases := []struct {
		salt, key string
		rounds    int
		want      string
	}{
		{"saltstring", "Hello world!", 5000,
			"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"saltstringsaltstring", "Hello world!", 10000,
			"$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
		{"toolongsaltstring", "This is just a test", 5000,
			"$6$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
		{"roundstoolow", "the minimum number is still observed", 1000,
			"$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
	}
	for _, c := range cases {
		salt := c.salt
		if len(salt) > 16 {
			salt = salt[:16] // the specification truncates the salt
		}
		if got := sha512Crypt([]byte(c.key), []byte(salt), c.rounds); got != c.want {
			t.Errorf("sha512Crypt(%q, %q, %d) =\n %s\nwant\n %s", c.key, salt, c.rounds, got, c.want)
		}
	}
}

func TestHashShapes(t *testing.T) {
	for _, scheme := range Schemes {
		h, err := Hash(strings.ToLower(scheme), secret)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "{"+scheme+"}") || strings.Contains(h, secret) {
			t.Errorf("%s: %q", scheme, h)
		}
		h2, _ := Hash(scheme, secret)
		if h == h2 {
			t.Errorf("%s: two hashes of one secret are equal (no salt?)", scheme)
		}
	}
	h, _ := Hash(SSHA512, secret)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "{SSHA512}"))
	if sum := sha512.Sum512(append([]byte(secret), raw[64:]...)); string(sum[:]) != string(raw[:64]) {
		t.Errorf("SSHA512 is not sha512(secret+salt)+salt")
	}
	if _, err := Hash("MD5", secret); err == nil {
		t.Error("MD5 accepted")
	}
	if _, err := DovecotLine("a:b", h); err == nil {
		t.Error("a user with ':' was accepted")
	}
}

// TestDovecotVerifies asks Dovecot's own password code (doveadm pw -t) to verify each scheme,
// with secrets of several lengths (the digest steps branch on multiples of 64 bytes). The e2e
// tests go further and log in through saslgate with an exported passwd-file.
func TestDovecotVerifies(t *testing.T) {
	if _, err := exec.LookPath("doveadm"); err != nil {
		t.Skip("doveadm not installed")
	}
	for _, scheme := range Schemes {
		for _, s := range []string{secret, "x", strings.Repeat("long secret ", 12)} {
			h, err := Hash(scheme, s)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("doveadm", "pw", "-t", h, "-p", s).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "(verified)") {
				t.Errorf("%s: doveadm pw -t %s: %v: %s", scheme, h, err, out)
			}
			out, _ = exec.Command("doveadm", "pw", "-t", h, "-p", s+"x").CombinedOutput()
			if strings.Contains(string(out), "(verified)") {
				t.Errorf("%s: a wrong secret verifies: %s", scheme, out)
			}
		}
	}
}
