package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saslgate/saslgate/backends"
)

// ldapTestLDIF is the directory TestLDAPRouteSource searches. evil's mailHost is
// "evil.example.com\r\nA1 LOGIN x y": IA5String allows CR and LF, a route must not.
const ldapTestLDIF = `dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: cn=saslgate,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: saslgate
userPassword: {{bindpw}}

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: Alice
mail: alice@example.com
mailHost: mail1.internal
userPassword: alice-backend-secret

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: bob
cn: Bob
sn: Bob
mail: bob@example.com
mailHost: mail2.internal:1143

dn: uid=nohost,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: nohost
cn: No Host
sn: Host
mail: nohost@example.com

dn: uid=twin1,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: twin1
cn: Twin
sn: One
mail: twin@example.com
mailHost: mail1.internal

dn: uid=twin2,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: twin2
cn: Twin
sn: Two
mail: twin@example.com
mailHost: mail2.internal

dn: uid=team1,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: team1
cn: Team
sn: One
mail: team@example.com

dn: uid=team2,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: team2
cn: Team
sn: Two
mail: team@example.com

dn: uid=team3,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: team3
cn: Team
sn: Three
mail: team@example.com

dn: uid=carol,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: carol
uid: carol.jones
cn: Carol
sn: Jones
mail: carol@example.com
mailHost: mail1.internal

dn: uid=evil,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: evil
cn: Evil
sn: Evil
mail: evil@example.com
mailHost:: ZXZpbC5leGFtcGxlLmNvbQ0KQTEgTE9HSU4geCB5
`

const (
	ldapAliceSecret = "alice-backend-secret"
	ldapEvilHost    = "evil.example.com\r\nA1 LOGIN x y"
)

// ldapLookup asks src for user with the router's default timeout.
func ldapLookup(src backends.Source, user string) (backends.Answer, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), backends.DefaultRouteTimeout)
	defer cancel()
	return src.Lookup(ctx, backends.Query{Protocol: "imap", User: user, Mechanism: "OAUTHBEARER", Attempt: 1})
}

// newLDAPSource builds a source closed at the end of the test.
func newLDAPSource(t *testing.T, cfg backends.LDAPConfig) backends.Source {
	t.Helper()
	src, err := backends.NewLDAPSource(cfg)
	if err != nil {
		t.Fatalf("NewLDAPSource: %v", err)
	}
	t.Cleanup(func() {
		if err := src.(io.Closer).Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return src
}

// TestLDAPRouteSource runs the "ldap" route source against a real slapd: routes, users it
// does not know, ambiguous and hostile answers, hostile user names, credentials, TLS, and
// the directory going away and coming back.
func TestLDAPRouteSource(t *testing.T) {
	e := e2e(t)
	dir, err := os.MkdirTemp(e.dir, "slapd-")
	if err != nil {
		t.Fatal(err)
	}
	d := startSlapd(t, dir, ldapTestLDIF)
	bindPW, err := os.ReadFile(filepath.Join(dir, "bindpw"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := backends.LDAPConfig{
		URL: d.url, BindDN: slapdBindDN, BindPasswordFile: filepath.Join(dir, "bindpw"),
		BaseDN: "ou=people," + slapdSuffix, UserAttribute: "uid", SecretAttribute: "userPassword",
	}
	src := newLDAPSource(t, cfg)
	// noLeak checks that an error names the server and the user, and no secret.
	noLeak := func(t *testing.T, err error, url, user string) {
		t.Helper()
		msg := err.Error()
		if !strings.Contains(msg, url) || !strings.Contains(msg, user) {
			t.Errorf("error %q does not name the server %s and the user %q", msg, url, user)
		}
		for _, secret := range []string{ldapAliceSecret, strings.TrimSpace(string(bindPW))} {
			if strings.Contains(msg, secret) {
				t.Errorf("error %q shows a secret", msg)
			}
		}
	}

	t.Run("lookups", func(t *testing.T) {
		for _, tc := range []struct {
			user    string
			want    backends.Answer // Secret compared through Reveal
			found   bool
			wantErr string
		}{
			{user: "alice@example.com", want: backends.Answer{Server: "mail1.internal", User: "alice", Secret: ldapAliceSecret}, found: true},
			{user: "bob@example.com", want: backends.Answer{Server: "mail2.internal:1143", User: "bob"}, found: true},
			// mail's equality rule is caseIgnoreIA5Match: the directory decides.
			{user: "Alice@Example.COM", want: backends.Answer{Server: "mail1.internal", User: "alice", Secret: ldapAliceSecret}, found: true},
			{user: "nobody@example.com"},
			{user: "nohost@example.com"},
			{user: "twin@example.com", wantErr: "matches 2 entries"},
			{user: "team@example.com", wantErr: "matches more than 2 entries"},
			{user: "carol@example.com", wantErr: "has 2 values of uid"},
			// Passed on as is: the router's check refuses it (below).
			{user: "evil@example.com", want: backends.Answer{Server: ldapEvilHost, User: "evil"}, found: true},
			// Escaped (RFC 4515), these find no one: unescaped, each would match every
			// entry, which the size limit would turn into an error.
			{user: "*"},
			{user: "alice)(mail=*"},
			{user: "*)(|(mail=*"},
			{user: "alice@example.com)(|(mail=*"},
			{user: `\2a`},
			{user: "alice\x00"},
			{user: ""},
		} {
			a, found, err := ldapLookup(src, tc.user)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("%q: Lookup = %+v, %v, %v; want error %q", tc.user, a, found, err, tc.wantErr)
					continue
				}
				noLeak(t, err, d.url, tc.user)
			case err != nil:
				t.Errorf("%q: Lookup error %v", tc.user, err)
			case found != tc.found || a.Server != tc.want.Server || a.User != tc.want.User || a.Pool != "":
				t.Errorf("%q: Lookup = %+v, found %v; want %+v, found %v", tc.user, a, found, tc.want, tc.found)
			case a.Secret.Reveal() != tc.want.Secret.Reveal():
				t.Errorf("%q: secret %q, want %q", tc.user, a.Secret.Reveal(), tc.want.Secret.Reveal())
			}
		}
	})

	t.Run("router", func(t *testing.T) {
		pools, err := backends.NewPools([]backends.PoolConfig{{
			Name: "mail", Protocol: "imap", Config: backends.Config{TLS: "none"},
			Members:     []backends.MemberConfig{{Address: "mail1.internal:143"}, {Address: "mail2.internal:1143"}},
			HealthCheck: backends.HealthConfig{Disabled: true},
		}}, map[string]string{"imap": "mail"})
		if err != nil {
			t.Fatal(err)
		}
		r := backends.NewRouter(pools, []backends.Source{src}, backends.RoutesConfig{}, nil)
		ctx := context.Background()
		route := func(user string) (backends.Route, error) {
			return r.Route(ctx, backends.Query{Protocol: "imap", User: user, Mechanism: "OAUTHBEARER", Attempt: 1})
		}
		rt, err := route("alice@example.com")
		if err != nil || rt.Source != "ldap" || rt.Member == nil || rt.Config.Address != "mail1.internal:143" ||
			rt.User != "alice" || rt.Secret.Reveal() != ldapAliceSecret {
			t.Errorf("alice: route from %s to %s as %q, %v", rt.Source, rt.Config.Address, rt.User, err)
		}
		if rt, err := route("nobody@example.com"); err != nil || rt.Source != "default" || rt.User != "nobody@example.com" {
			t.Errorf("nobody: route %+v, %v; want the default pool", rt, err)
		}
		_, err = route("evil@example.com")
		if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "unusable route") || strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("evil: err = %q, want ErrUnavailable for an unusable route, without CR or LF", err)
		}
		_, err = route("twin@example.com")
		if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "matches 2 entries") {
			t.Errorf("twin: err = %v, want ErrUnavailable", err)
		}
	})

	t.Run("credentials", func(t *testing.T) {
		// The ACL lets only the bind DN read: anonymously, even the base DN is hidden, which
		// slapd answers with noSuchObject (32), a failed lookup and not an unknown user.
		anon := cfg
		anon.BindDN, anon.BindPasswordFile = "", ""
		if a, found, err := ldapLookup(newLDAPSource(t, anon), "alice@example.com"); found || err == nil || !strings.Contains(err.Error(), "No Such Object") {
			t.Errorf("anonymous: Lookup = %+v, %v, %v; want No Such Object", a, found, err)
		}
		wrong := cfg
		wrong.BindPasswordFile = filepath.Join(dir, "wrongpw")
		if err := os.WriteFile(wrong.BindPasswordFile, []byte("not-the-password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, found, err := ldapLookup(newLDAPSource(t, wrong), "alice@example.com")
		if err == nil || found || !strings.Contains(err.Error(), "bind as") || !strings.Contains(err.Error(), "Invalid Credentials") {
			t.Fatalf("wrong password: Lookup = %v, %v; want the bind refused", found, err)
		}
		noLeak(t, err, d.url, "alice@example.com")
		if strings.Contains(err.Error(), "not-the-password") {
			t.Errorf("error %q shows the password", err)
		}
	})

	t.Run("tls", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cfg  func(*backends.LDAPConfig)
		}{
			{"starttls", func(c *backends.LDAPConfig) { c.StartTLS, c.CAFile = true, d.caFile }},
			{"ldaps", func(c *backends.LDAPConfig) { c.URL, c.CAFile = d.ldapsURL, d.caFile }},
		} {
			c := cfg
			tc.cfg(&c)
			a, found, err := ldapLookup(newLDAPSource(t, c), "alice@example.com")
			if err != nil || !found || a.Server != "mail1.internal" {
				t.Errorf("%s: Lookup = %+v, %v, %v", tc.name, a, found, err)
			}
			// Without the CA, slapd's certificate is not trusted.
			c.CAFile = ""
			_, _, err = ldapLookup(newLDAPSource(t, c), "alice@example.com")
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s without ca_file: Lookup error %v, want an untrusted certificate", tc.name, err)
			}
		}
	})

	// Last: it stops and restarts the directory.
	t.Run("directory down and back", func(t *testing.T) {
		if _, found, err := ldapLookup(src, "alice@example.com"); !found || err != nil {
			t.Fatalf("before: %v, %v", found, err)
		}
		// A restart between two lookups is not seen: the broken connection is replaced.
		d.stop()
		d.start()
		if a, found, err := ldapLookup(src, "alice@example.com"); !found || err != nil || a.Server != "mail1.internal" {
			t.Fatalf("after a restart: Lookup = %+v, %v, %v", a, found, err)
		}
		d.stop()
		_, found, err := ldapLookup(src, "alice@example.com")
		if err == nil || found || !strings.Contains(err.Error(), "connect") {
			t.Fatalf("directory down: Lookup = %v, %v; want a connect error", found, err)
		}
		noLeak(t, err, d.url, "alice@example.com")
		// A source made while the directory is down is made all the same.
		down := newLDAPSource(t, cfg)
		if _, _, err := ldapLookup(down, "bob@example.com"); err == nil {
			t.Errorf("directory down: new source's Lookup error nil")
		}
		d.start()
		for _, s := range []backends.Source{src, down} {
			if a, found, err := ldapLookup(s, "bob@example.com"); !found || err != nil || a.Server != "mail2.internal:1143" {
				t.Errorf("directory back: Lookup = %+v, %v, %v", a, found, err)
			}
		}
	})
}
