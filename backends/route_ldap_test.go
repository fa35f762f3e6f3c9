package backends

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

func TestLDAPConfigValidate(t *testing.T) {
	base := LDAPConfig{URL: "ldap://ldap.internal", BaseDN: "ou=people,dc=example,dc=com"}
	with := func(f func(*LDAPConfig)) LDAPConfig { c := base; f(&c); return c }
	for _, tc := range []struct {
		name string
		cfg  LDAPConfig
		want []string // each must appear; none: valid
	}{
		{"minimal", base, nil},
		{"everything", with(func(c *LDAPConfig) {
			c.URL, c.CAFile, c.BindDN, c.BindPasswordFile = "ldaps://ldap.internal:636/", "/ca.pem", "cn=saslgate,dc=example,dc=com", "/pw"
			c.Filter, c.HostAttribute, c.UserAttribute, c.SecretAttribute = "(&(uid=%n)(associatedDomain=%d)(!(x=100%%)))", "host;lang-de", "uid", "x-secret-2"
		}), nil},
		{"start_tls with a CA", with(func(c *LDAPConfig) { c.StartTLS, c.CAFile = true, "/ca.pem" }), nil},
		{"IPv6 with port", with(func(c *LDAPConfig) { c.URL = "ldap://[::1]:3389" }), nil},
		{"empty", LDAPConfig{}, []string{"ldap: url: required", "ldap: base_dn: required"}},
		{"not a URL", with(func(c *LDAPConfig) { c.URL = "ldap.internal:389" }), []string{`ldap: url: "ldap.internal:389" is not an ldap:// or ldaps:// URL`}},
		{"http", with(func(c *LDAPConfig) { c.URL = "http://ldap.internal" }), []string{"ldap: url:", "not an ldap:// or ldaps://"}},
		{"ldapi", with(func(c *LDAPConfig) { c.URL = "ldapi:///var/run/slapd/ldapi" }), []string{"ldap: url:"}},
		{"no host", with(func(c *LDAPConfig) { c.URL = "ldap://:389" }), []string{"ldap: url:", "with a host"}},
		{"credentials in the URL", with(func(c *LDAPConfig) { c.URL = "ldap://admin:hunter2@ldap.internal" }), []string{`ldap: url: "ldap://admin:xxxxx@ldap.internal": want only ldap[s]://host[:port]`}},
		{"DN in the URL", with(func(c *LDAPConfig) { c.URL = "ldap://ldap.internal/dc=example,dc=com" }), []string{"ldap: url:", "base_dn"}},
		{"query in the URL", with(func(c *LDAPConfig) { c.URL = "ldap://ldap.internal/?mail" }), []string{"ldap: url:"}},
		{"port 0", with(func(c *LDAPConfig) { c.URL = "ldap://ldap.internal:0" }), []string{"ldap: url:", "port must be"}},
		{"port too big", with(func(c *LDAPConfig) { c.URL = "ldap://ldap.internal:65536" }), []string{"ldap: url:", "port must be"}},
		{"start_tls with ldaps", with(func(c *LDAPConfig) { c.URL, c.StartTLS = "ldaps://ldap.internal", true }), []string{"ldap: start_tls: only with an ldap:// url"}},
		{"ca_file without TLS", with(func(c *LDAPConfig) { c.CAFile = "/ca.pem" }), []string{"ldap: ca_file: only used with an ldaps:// url or start_tls"}},
		{"bind_dn alone", with(func(c *LDAPConfig) { c.BindDN = "cn=saslgate,dc=example,dc=com" }), []string{"ldap: bind_dn, bind_password_file: set both or neither"}},
		{"bind_password_file alone", with(func(c *LDAPConfig) { c.BindPasswordFile = "/pw" }), []string{"ldap: bind_dn, bind_password_file: set both or neither"}},
		{"bind_dn not a DN", with(func(c *LDAPConfig) { c.BindDN, c.BindPasswordFile = "saslgate", "/pw" }), []string{`ldap: bind_dn: "saslgate" is not a DN`}},
		{"base_dn not a DN", with(func(c *LDAPConfig) { c.BaseDN = "example.com" }), []string{`ldap: base_dn: "example.com" is not a DN`}},
		{"filter without the user", with(func(c *LDAPConfig) { c.Filter = "(objectClass=*)" }), []string{"ldap: filter:", "none of %u, %n, %d"}},
		{"filter with only %%", with(func(c *LDAPConfig) { c.Filter = "(mail=%%u)" }), []string{"ldap: filter:", "none of %u, %n, %d"}},
		{"filter with an unknown escape", with(func(c *LDAPConfig) { c.Filter = "(mail=%s)" }), []string{"ldap: filter:", "unknown escape %s"}},
		{"filter ending in %", with(func(c *LDAPConfig) { c.Filter = "(mail=%u)%" }), []string{"ldap: filter:", "lone %"}},
		{"filter without parentheses", with(func(c *LDAPConfig) { c.Filter = "mail=%u" }), []string{"ldap: filter:", "not an LDAP filter"}},
		{"filter unbalanced", with(func(c *LDAPConfig) { c.Filter = "(&(mail=%u)" }), []string{"ldap: filter:", "not an LDAP filter"}},
		{"filter with a bad escape", with(func(c *LDAPConfig) { c.Filter = `(mail=%u\zz)` }), []string{"ldap: filter:", "not an LDAP filter"}},
		{"host_attribute with a space", with(func(c *LDAPConfig) { c.HostAttribute = "mail host" }), []string{`ldap: host_attribute: "mail host" is not an attribute name`}},
		{"user_attribute starting with a digit", with(func(c *LDAPConfig) { c.UserAttribute = "1uid" }), []string{`ldap: user_attribute: "1uid" is not an attribute name`}},
		{"secret_attribute with an empty option", with(func(c *LDAPConfig) { c.SecretAttribute = "userPassword;" }), []string{`ldap: secret_attribute: "userPassword;" is not an attribute name`}},
		{"secret_attribute with a filter in it", with(func(c *LDAPConfig) { c.SecretAttribute = "x)(uid=*" }), []string{"ldap: secret_attribute:"}},
		{"several problems at once", LDAPConfig{URL: "ldaps://h", StartTLS: true, BindDN: "cn=x", Filter: "(uid=x)", UserAttribute: "a b"},
			[]string{"start_tls:", "bind_dn, bind_password_file:", "base_dn: required", "filter:", "user_attribute:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tc.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "ldap: ") {
					t.Errorf("error %q does not start with \"ldap: \"", line)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestLDAPFilter(t *testing.T) {
	for _, tc := range []struct {
		template, user, want string
	}{
		{DefaultLDAPFilter, "alice@example.com", "(mail=alice@example.com)"},
		{"(uid=%n)", "alice@example.com", "(uid=alice)"},
		{"(&(uid=%n)(associatedDomain=%d))", "alice@example.com", "(&(uid=alice)(associatedDomain=example.com))"},
		// The last '@' splits: a local part may hold a quoted '@' (RFC 5321 §4.1.2).
		{"(&(uid=%n)(dc=%d))", `"a@b"@example.com`, `(&(uid="a@b")(dc=example.com))`},
		{"(&(uid=%n)(dc=%d))", "alice", "(&(uid=alice)(dc=))"},
		{"(&(uid=%n)(dc=%d))", "alice@", "(&(uid=alice)(dc=))"},
		{"(&(uid=%n)(dc=%d))", "@example.com", "(&(uid=)(dc=example.com))"},
		{"(|(mail=%u)(mail=%%%u))", "a", "(|(mail=a)(mail=%a))"},
		// RFC 4515 §3: '*', '(', ')', '\' and NUL are escaped as \XX, and so is every byte
		// outside ASCII.
		{DefaultLDAPFilter, "*", `(mail=\2a)`},
		{DefaultLDAPFilter, "(", `(mail=\28)`},
		{DefaultLDAPFilter, ")", `(mail=\29)`},
		{DefaultLDAPFilter, `\`, `(mail=\5c)`},
		{DefaultLDAPFilter, "\x00", `(mail=\00)`},
		{DefaultLDAPFilter, "alice)(uid=*", `(mail=alice\29\28uid=\2a)`},
		{DefaultLDAPFilter, "*)(|(objectClass=*", `(mail=\2a\29\28|\28objectClass=\2a)`},
		{DefaultLDAPFilter, `\2a`, `(mail=\5c2a)`},
		{DefaultLDAPFilter, "jürgen@example.com", `(mail=j\c3\bcrgen@example.com)`},
		{"(&(uid=%n)(dc=%d))", "*@*", `(&(uid=\2a)(dc=\2a))`},
		{"(&(uid=%n)(dc=%d))", "a)(x=*@b)(y=*", `(&(uid=a\29\28x=\2a)(dc=b\29\28y=\2a))`},
	} {
		if got := ldapFilter(tc.template, tc.user); got != tc.want {
			t.Errorf("ldapFilter(%q, %q) = %q, want %q", tc.template, tc.user, got, tc.want)
		}
	}
}

// TestLDAPFilterHostileUsers shows that a user's bytes stay one assertion value: the filter
// compiles to one equality match whose value is the user, byte for byte.
func TestLDAPFilterHostileUsers(t *testing.T) {
	for _, user := range []string{"*", "(", ")", `\`, "\x00", "alice)(uid=*", "alice)(|(uid=*)", "*)(objectClass=*))(&(objectClass=void", `\2a`, "\xff\xfe", "\r\nA1 LOGIN x y", ""} {
		p, err := ldap.CompileFilter(ldapFilter(DefaultLDAPFilter, user))
		if err != nil {
			t.Errorf("user %q: filter %q does not compile: %v", user, ldapFilter(DefaultLDAPFilter, user), err)
			continue
		}
		if p.Tag != ldap.FilterEqualityMatch || len(p.Children) != 2 {
			t.Errorf("user %q: filter is %s, want one equality match", user, ldap.FilterMap[uint64(p.Tag)])
			continue
		}
		if got := p.Children[1].Data.String(); got != user {
			t.Errorf("user %q: assertion value %q", user, got)
		}
	}
}

func TestLDAPAttributeDescription(t *testing.T) {
	for a, want := range map[string]bool{
		"mailHost": true, "mail-host": true, "x2": true, "cn;lang-de": true, "cn;lang-de;binary": true, "userCertificate;binary": true,
		"": false, "1cn": false, "-cn": false, "mail host": false, "mail_host": false, "cn;": false, ";x": false, "cn;;x": false,
		"cn;lang de": false, "2.5.4.3": false, "mail*": false, "mail)": false, "maïl": false,
	} {
		if got := validAttributeDescription(a); got != want {
			t.Errorf("validAttributeDescription(%q) = %v, want %v", a, got, want)
		}
	}
}

// ldapEntry builds a search result entry; attrs are name, value pairs.
func ldapEntry(dn string, attrs ...string) *ldap.Entry {
	m := map[string][]string{}
	for i := 0; i+1 < len(attrs); i += 2 {
		m[attrs[i]] = append(m[attrs[i]], attrs[i+1])
	}
	return ldap.NewEntry(dn, m)
}

func TestLDAPAnswer(t *testing.T) {
	s := &ldapSource{cfg: LDAPConfig{HostAttribute: "mailHost", UserAttribute: "uid", SecretAttribute: "mailPassword"}}
	const dn = "uid=alice,ou=people,dc=example,dc=com"
	for _, tc := range []struct {
		name    string
		res     ldap.SearchResult
		want    Answer
		found   bool
		wantErr string
	}{
		{"none", ldap.SearchResult{}, Answer{}, false, ""},
		{"host only", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "mailHost", "mail1.internal")}},
			Answer{Server: "mail1.internal"}, true, ""},
		{"attribute names are case insensitive", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "MAILHOST", "mail1.internal:143", "UID", "alice", "mailpassword", "s3cret")}},
			Answer{Server: "mail1.internal:143", User: "alice", Secret: "s3cret"}, true, ""},
		{"no host attribute", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "uid", "alice", "mailPassword", "s3cret")}}, Answer{}, false, ""},
		// The host goes to the router as is: Answer.check refuses it.
		{"host with CRLF", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "mailHost", "evil\r\nA1 LOGIN x y")}},
			Answer{Server: "evil\r\nA1 LOGIN x y"}, true, ""},
		{"two entries", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "mailHost", "a"), ldapEntry("uid=bob", "mailHost", "b")}},
			Answer{}, false, "filter (mail=x) matches 2 entries"},
		{"two hosts", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "mailHost", "a", "mailHost", "b")}},
			Answer{}, false, `entry "uid=alice,ou=people,dc=example,dc=com" has 2 values of mailHost, want one`},
		{"two secrets", ldap.SearchResult{Entries: []*ldap.Entry{ldapEntry(dn, "mailHost", "a", "mailPassword", "s3cret", "mailPassword", "0ther")}},
			Answer{}, false, "has 2 values of mailPassword"},
		{"a referral only", ldap.SearchResult{Referrals: []string{"ldap://other/dc=example,dc=com"}}, Answer{}, false, "referral"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, found, err := s.answer("(mail=x)", &tc.res)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "0ther") {
					t.Errorf("err = %v shows a secret", err)
				}
			case err != nil:
				t.Fatalf("err = %v", err)
			case found != tc.found || a != tc.want:
				t.Errorf("answer = %+v, %v; want %+v, %v", a, found, tc.want, tc.found)
			case found && a.Secret.Reveal() != tc.want.Secret.Reveal():
				t.Errorf("secret %q, want %q", a.Secret.Reveal(), tc.want.Secret.Reveal())
			}
		})
	}
}

// writeLDAPFile writes a file in dir with mode and returns its path.
func writeLDAPFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// testCAPEM returns a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ldap test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestNewLDAPSource(t *testing.T) {
	dir := t.TempDir()
	ca := writeLDAPFile(t, dir, "ca.pem", testCAPEM(t), 0o644)
	notPEM := writeLDAPFile(t, dir, "ca.txt", "not a certificate\n", 0o644)
	pw := writeLDAPFile(t, dir, "pw", "hunter2-secret\n", 0o600)
	open := writeLDAPFile(t, dir, "pw-open", "hunter2-secret\n", 0o644)
	empty := writeLDAPFile(t, dir, "pw-empty", "\n", 0o600)
	twoLines := writeLDAPFile(t, dir, "pw-two", "hunter2-secret\nmore\n", 0o600)
	base := LDAPConfig{URL: "ldaps://127.0.0.1:1", BaseDN: "dc=example,dc=com", BindDN: "cn=saslgate,dc=example,dc=com", BindPasswordFile: pw, CAFile: ca}
	with := func(f func(*LDAPConfig)) LDAPConfig { c := base; f(&c); return c }

	// The directory is not there: a source is still made, as nothing is asked yet.
	s, err := NewLDAPSource(base)
	if err != nil {
		t.Fatalf("NewLDAPSource = %v", err)
	}
	ls := s.(*ldapSource)
	if ls.Name() != "ldap" || ls.tls.MinVersion != tls.VersionTLS12 || ls.tls.ServerName != "127.0.0.1" || ls.tls.RootCAs == nil {
		t.Errorf("source %s, TLS config %+v", ls.Name(), ls.tls)
	}
	if got, err := ls.password(); got != "hunter2-secret" || err != nil {
		t.Errorf("password = %q, %v", got, err)
	}
	if want := []string{"mailHost"}; strings.Join(ls.attrs, ",") != strings.Join(want, ",") {
		t.Errorf("attributes %q, want %q", ls.attrs, want)
	}
	if err := s.(io.Closer).Close(); err != nil {
		t.Errorf("Close = %v", err)
	}

	for _, tc := range []struct {
		name string
		cfg  LDAPConfig
		want string
	}{
		{"invalid", with(func(c *LDAPConfig) { c.BaseDN = "" }), "ldap: base_dn: required"},
		{"missing CA file", with(func(c *LDAPConfig) { c.CAFile = filepath.Join(dir, "nope.pem") }), "ldap: ca_file: open " + filepath.Join(dir, "nope.pem")},
		{"CA file without certificates", with(func(c *LDAPConfig) { c.CAFile = notPEM }), "ldap: ca_file " + notPEM + ": no PEM certificates"},
		{"missing password file", with(func(c *LDAPConfig) { c.BindPasswordFile = filepath.Join(dir, "nope") }), "bind_password_file: open " + filepath.Join(dir, "nope")},
		{"password file readable by others", with(func(c *LDAPConfig) { c.BindPasswordFile = open }), "bind_password_file: " + open},
		{"empty password file", with(func(c *LDAPConfig) { c.BindPasswordFile = empty }), "bind_password_file " + empty + " is empty"},
		{"password file of two lines", with(func(c *LDAPConfig) { c.BindPasswordFile = twoLines }), "bind_password_file " + twoLines + " is not one line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLDAPSource(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "ldap: ") {
				t.Fatalf("NewLDAPSource = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestLDAPPasswordLineEnds(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"pw":     "pw",
		"pw\n":   "pw",
		"pw\r\n": "pw",
		" pw \n": " pw ", // spaces are the password's
	} {
		s := &ldapSource{cfg: LDAPConfig{BindPasswordFile: writeLDAPFile(t, dir, "pw", content, 0o600)}}
		if got, err := s.password(); got != want || err != nil {
			t.Errorf("file %q: password %q, %v; want %q", content, got, err, want)
		}
	}
}

// TestLDAPLookupDirectoryDown: a lookup against a closed port fails, naming the server and
// the user, and a closed source refuses lookups.
func TestLDAPLookupDirectoryDown(t *testing.T) {
	s, err := NewLDAPSource(LDAPConfig{URL: "ldap://127.0.0.1:1", BaseDN: "dc=example,dc=com"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, found, err := s.Lookup(ctx, Query{User: "alice@example.com"})
	if err == nil || found || !strings.HasPrefix(err.Error(), `ldap: ldap://127.0.0.1:1: search for "alice@example.com": connect: `) {
		t.Fatalf("Lookup = %v, %v", found, err)
	}
	if !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		t.Errorf("err = %v, want an ldap network error", err)
	}
	s.(io.Closer).Close()
	if _, _, err := s.Lookup(ctx, Query{User: "alice@example.com"}); err == nil || !strings.Contains(err.Error(), "source closed") {
		t.Errorf("Lookup after Close = %v", err)
	}
}

// fakeDirectory is a loopback LDAP server that answers anonymous searches with one entry
// (mailHost mail1.internal), except those drop says to drop: it then closes the connection
// without answering. conns counts the connections it accepted.
type fakeDirectory struct {
	ln    net.Listener
	drop  func(conn, search int) bool // both from 1
	conns atomic.Int32
}

func startFakeDirectory(t *testing.T, drop func(conn, search int) bool) *fakeDirectory {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDirectory{ln: ln, drop: drop}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go d.serve(c, int(d.conns.Add(1)))
		}
	}()
	return d
}

func (d *fakeDirectory) url() string { return "ldap://" + d.ln.Addr().String() }

func (d *fakeDirectory) serve(c net.Conn, conn int) {
	defer c.Close()
	for search := 1; ; {
		p, err := ber.ReadPacket(c)
		if err != nil || len(p.Children) < 2 {
			return
		}
		id, _ := p.Children[0].Value.(int64)
		if p.Children[1].Tag != ldap.ApplicationSearchRequest {
			return // unbind, or anything else
		}
		if d.drop(conn, search) {
			return
		}
		search++
		attr := ber.NewSequence("attribute")
		attr.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "mailHost", ""))
		vals := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "")
		vals.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "mail1.internal", ""))
		attr.AppendChild(vals)
		attrs := ber.NewSequence("attributes")
		attrs.AppendChild(attr)
		entry := []*ber.Packet{ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "uid=alice,dc=example,dc=com", ""), attrs}
		done := []*ber.Packet{
			ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 0, ""),
			ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", ""),
			ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", ""),
		}
		for _, r := range []struct {
			op       ber.Tag
			children []*ber.Packet
		}{{ldap.ApplicationSearchResultEntry, entry}, {ldap.ApplicationSearchResultDone, done}} {
			env := ber.NewSequence("LDAPMessage")
			env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, ""))
			op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, r.op, nil, "")
			for _, ch := range r.children {
				op.AppendChild(ch)
			}
			env.AppendChild(op)
			if _, err := c.Write(env.Bytes()); err != nil {
				return
			}
		}
	}
}

// TestLDAPReconnectsOnce: a kept connection the directory dropped is replaced once; a new
// connection that fails is not retried.
func TestLDAPReconnectsOnce(t *testing.T) {
	lookup := func(s Source) (Answer, bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.Lookup(ctx, Query{User: "alice@example.com"})
	}

	// The first connection answers one search and drops the second.
	d := startFakeDirectory(t, func(conn, search int) bool { return conn == 1 && search == 2 })
	s, err := NewLDAPSource(LDAPConfig{URL: d.url(), BaseDN: "dc=example,dc=com"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.(io.Closer).Close()
	for i := 1; i <= 3; i++ {
		if a, found, err := lookup(s); err != nil || !found || a.Server != "mail1.internal" {
			t.Fatalf("lookup %d = %+v, %v, %v", i, a, found, err)
		}
	}
	if n := d.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one kept, one replacing it)", n)
	}

	// Every search is dropped: the new connection's failure is the lookup's.
	d = startFakeDirectory(t, func(int, int) bool { return true })
	s, err = NewLDAPSource(LDAPConfig{URL: d.url(), BaseDN: "dc=example,dc=com"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.(io.Closer).Close()
	if _, _, err := lookup(s); err == nil || !strings.Contains(err.Error(), d.url()) {
		t.Fatalf("lookup = %v, want an error naming the directory", err)
	}
	if n := d.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestLDAPBlackHole: a directory that accepts connections and never answers (a search, or,
// after accepting StartTLS, the TLS handshake) costs a lookup its context's time, no more,
// and one waiting for the connection gives up with its own.
func TestLDAPBlackHole(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				p, err := ber.ReadPacket(c)
				if err == nil && len(p.Children) == 2 && p.Children[1].Tag == ldap.ApplicationExtendedRequest {
					env := ber.NewSequence("LDAPMessage")
					env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, p.Children[0].Value, ""))
					op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedResponse, nil, "")
					op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 0, ""))
					op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", ""))
					op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", ""))
					env.AppendChild(op)
					_, _ = c.Write(env.Bytes())
				}
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	for _, starttls := range []bool{false, true} {
		s, err := NewLDAPSource(LDAPConfig{URL: "ldap://" + ln.Addr().String(), StartTLS: starttls, BaseDN: "dc=example,dc=com"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.(io.Closer).Close()
		lookup := func(timeout time.Duration) (time.Duration, error) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			_, _, err := s.Lookup(ctx, Query{User: "alice@example.com"})
			return time.Since(start), err
		}
		first := make(chan error, 1)
		go func() {
			_, err := lookup(700 * time.Millisecond)
			first <- err
		}()
		time.Sleep(100 * time.Millisecond) // the first lookup holds the connection
		if took, err := lookup(200 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || took > time.Second {
			t.Errorf("starttls %v: waiting lookup took %v: %v", starttls, took, err)
		}
		select {
		case err := <-first:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("starttls %v: lookup = %v, want DeadlineExceeded", starttls, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("starttls %v: lookup still running 3s after its deadline", starttls)
		}
	}
}
