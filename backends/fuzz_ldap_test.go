package backends

import (
	"strconv"
	"strings"
	"testing"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// ldapFuzzTemplates are filters of equality matches only, so that every user, even an empty
// one, leaves their structure as it is (a substring template such as (mail=%u*) becomes a
// presence filter for the empty user, by the template's own doing).
var ldapFuzzTemplates = []string{
	DefaultLDAPFilter,
	"(&(objectClass=inetOrgPerson)(|(uid=%n)(mail=%u)))",
	"(&(uid=%n)(associatedDomain=%d)(!(mailHost=%%)))",
}

// filterShape is a compiled filter without its values: each element's class, type and tag,
// and its children. A wildcard or a group the user's bytes made would change it.
func filterShape(p *ber.Packet) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(p.ClassType)) + "." + strconv.Itoa(int(p.TagType)) + "." + strconv.Itoa(int(p.Tag)))
	if len(p.Children) > 0 {
		b.WriteByte('{')
		for _, c := range p.Children {
			b.WriteString(filterShape(c) + " ")
		}
		b.WriteByte('}')
	}
	return b.String()
}

// FuzzLDAPFilter checks the user → filter substitution: the filter compiles, has the
// template's structure (the user's bytes never open or close a parenthesis group, nor add a
// wildcard), and its assertion values are the user's bytes, its local part and its domain.
func FuzzLDAPFilter(f *testing.F) {
	for _, seed := range []string{
		"alice@example.com", "alice", "", "@", "a@b@c",
		"*", "(", ")", `\`, "\x00", "alice)(uid=*", "*)(|(objectClass=*", "\xff", "%u", "%%",
		// RFC 4515 §4's examples, as users.
		"(cn=Babs Jensen)",
		"(!(cn=Tim Howes))",
		"(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))",
		"(o=univ*of*mich*)",
		"(seeAlso=)",
		"(cn:caseExactMatch:=Fred Flintstone)",
		"(sn:dn:2.4.6.8.10:=Barney Rubble)",
		"(:DN:2.4.6.8.10:=Dino)",
		`(o=Parens R Us \28for all your parenthetical needs\29)`,
		`(cn=*\2A*)`,
		`(filename=C:\5cMyFile)`,
		`(bin=\00\00\00\04)`,
		`(sn=Lu\c4\8di\c4\87)`,
		`(1.3.6.1.4.1.1466.0=\04\02\48\69)`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, user string) {
		local, domain := user, ""
		if i := strings.LastIndexByte(user, '@'); i >= 0 {
			local, domain = user[:i], user[i+1:]
		}
		for _, tpl := range ldapFuzzTemplates {
			got := ldapFilter(tpl, user)
			p, err := ldap.CompileFilter(got)
			if err != nil {
				t.Fatalf("user %q, template %s: filter %q does not compile: %v", user, tpl, got, err)
			}
			if n, want := strings.Count(got, "("), strings.Count(tpl, "("); n != want {
				t.Fatalf("user %q, template %s: filter %q has %d '(', want %d", user, tpl, got, n, want)
			}
			sample, err := ldap.CompileFilter(ldapFilter(tpl, ldapSampleUser))
			if err != nil {
				t.Fatal(err)
			}
			if shape, want := filterShape(p), filterShape(sample); shape != want {
				t.Fatalf("user %q, template %s: filter %q has the structure %s, want %s", user, tpl, got, shape, want)
			}
			// The same structure as the sample's: the children indexed below are there.
			if tpl == DefaultLDAPFilter && p.Children[1].Data.String() != user {
				t.Fatalf("user %q: filter %q asserts %q", user, got, p.Children[1].Data.String())
			}
			if strings.HasPrefix(tpl, "(&(uid=%n)(associatedDomain=%d)") {
				if n, d := p.Children[0].Children[1].Data.String(), p.Children[1].Children[1].Data.String(); n != local || d != domain {
					t.Fatalf("user %q: %%n = %q, %%d = %q; want %q, %q", user, n, d, local, domain)
				}
			}
		}
	})
}
