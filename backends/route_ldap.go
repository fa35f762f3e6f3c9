package backends

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPConfig is the "ldap" source: the user's entry is searched, and its host attribute
// (such as mailHost) names the server; optionally a user and a secret attribute give the
// backend user name and secret.
type LDAPConfig struct {
	// URL is the directory: ldap://host[:port] or ldaps://host[:port].
	URL string `yaml:"url"`
	// StartTLS upgrades an ldap:// connection with StartTLS before binding.
	StartTLS bool `yaml:"start_tls"`
	// CAFile is a PEM file of CA certificates trusted for the directory in addition to the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// BindDN and BindPasswordFile are the credentials searched with (both empty: anonymous).
	// The password file is one line, under the rule of every secret file.
	BindDN           string `yaml:"bind_dn"`
	BindPasswordFile string `yaml:"bind_password_file"`
	// BaseDN is where the search starts; the scope is the whole subtree.
	BaseDN string `yaml:"base_dn"`
	// Filter is the search filter, with %u for the user, %n for its local part and %d for
	// its domain, each escaped per RFC 4515; default (mail=%u).
	Filter string `yaml:"filter"`
	// HostAttribute names the server (host or host:port); default mailHost.
	HostAttribute string `yaml:"host_attribute"`
	// UserAttribute, if set, gives the backend user name.
	UserAttribute string `yaml:"user_attribute"`
	// SecretAttribute, if set, gives the backend secret.
	SecretAttribute string `yaml:"secret_attribute"`
}

// LDAP source defaults.
const (
	DefaultLDAPFilter        = "(mail=%u)"
	DefaultLDAPHostAttribute = "mailHost"
)

// ldapSampleUser is substituted into a filter to check that it parses.
const ldapSampleUser = "alice@example.com"

func (c LDAPConfig) withDefaults() LDAPConfig {
	c.Filter = cmp.Or(c.Filter, DefaultLDAPFilter)
	c.HostAttribute = cmp.Or(c.HostAttribute, DefaultLDAPHostAttribute)
	return c
}

// Validate names every problem of the section.
func (c LDAPConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("ldap: url: required"))
		u = nil
	case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Hostname() == "":
		errs = append(errs, fmt.Errorf("ldap: url: %q is not an ldap:// or ldaps:// URL with a host", c.URL))
		u = nil
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		// An RFC 4516 URL may carry a DN, attributes and a filter: here they are fields of
		// their own, and credentials in the URL would end up in every error message.
		errs = append(errs, fmt.Errorf("ldap: url: %q: want only ldap[s]://host[:port] (base_dn, filter and bind_dn are fields of their own)", u.Redacted()))
	case u.Port() != "" && !validPort(u.Port()):
		errs = append(errs, fmt.Errorf("ldap: url: %q: port must be a number from 1 to 65535", c.URL))
	}
	tlsOn := u != nil && (u.Scheme == "ldaps" || c.StartTLS)
	if c.StartTLS && u != nil && u.Scheme != "ldap" {
		errs = append(errs, errors.New("ldap: start_tls: only with an ldap:// url (ldaps:// is TLS from the start)"))
	}
	if c.CAFile != "" && u != nil && !tlsOn {
		errs = append(errs, errors.New("ldap: ca_file: only used with an ldaps:// url or start_tls"))
	}
	if (c.BindDN == "") != (c.BindPasswordFile == "") {
		errs = append(errs, errors.New("ldap: bind_dn, bind_password_file: set both or neither"))
	}
	if _, err := ldap.ParseDN(c.BindDN); err != nil {
		errs = append(errs, fmt.Errorf("ldap: bind_dn: %q is not a DN: %v", c.BindDN, err))
	}
	if c.BaseDN == "" {
		errs = append(errs, errors.New("ldap: base_dn: required"))
	} else if _, err := ldap.ParseDN(c.BaseDN); err != nil {
		errs = append(errs, fmt.Errorf("ldap: base_dn: %q is not a DN: %v", c.BaseDN, err))
	}
	if err := checkLDAPFilter(c.Filter); err != nil {
		errs = append(errs, fmt.Errorf("ldap: filter: %w", err))
	}
	for _, a := range []struct{ field, value string }{
		{"host_attribute", c.HostAttribute},
		{"user_attribute", c.UserAttribute},
		{"secret_attribute", c.SecretAttribute},
	} {
		if a.value != "" && !validAttributeDescription(a.value) {
			errs = append(errs, fmt.Errorf("ldap: %s: %q is not an attribute name (letters, digits and '-', options after ';')", a.field, a.value))
		}
	}
	return errors.Join(errs...)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// checkLDAPFilter checks a filter template: only the escapes %u, %n, %d and %%, at least one
// of the first three, and an RFC 4515 filter once a user is substituted.
func checkLDAPFilter(template string) error {
	uses := false
	for i := 0; i < len(template); i++ {
		if template[i] != '%' {
			continue
		}
		if i+1 == len(template) {
			return fmt.Errorf("%q ends in a lone %% (write %%%% for a %%)", template)
		}
		i++
		switch template[i] {
		case 'u', 'n', 'd':
			uses = true
		case '%':
		default:
			return fmt.Errorf("%q: unknown escape %%%c (want %%u, %%n, %%d or %%%%)", template, template[i])
		}
	}
	if !uses {
		return fmt.Errorf("%q has none of %%u, %%n, %%d: it would find the same entry for every user", template)
	}
	if _, err := ldap.CompileFilter(ldapFilter(template, ldapSampleUser)); err != nil {
		return fmt.Errorf("%q is not an LDAP filter (RFC 4515) once a user is substituted: %v", template, err)
	}
	return nil
}

// validAttributeDescription reports whether a is an attribute description (RFC 4512 §2.5) by
// name: a letter, then letters, digits and '-'; then options, each after a ';', of letters,
// digits and '-'.
func validAttributeDescription(a string) bool {
	if a == "" || !(a[0] >= 'a' && a[0] <= 'z' || a[0] >= 'A' && a[0] <= 'Z') {
		return false
	}
	for _, part := range strings.Split(a, ";") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ldapFilter substitutes user into a filter template (LDAPConfig.Filter): %u is the user, %n
// its local part (before the last '@', or the whole user), %d its domain (after the last '@',
// or empty), each escaped per RFC 4515 §3 so that no byte of the user is filter syntax.
func ldapFilter(template, user string) string {
	local, domain := user, ""
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		local, domain = user[:i], user[i+1:]
	}
	var b strings.Builder
	for i := 0; i < len(template); i++ {
		c := template[i]
		if c != '%' || i+1 == len(template) {
			b.WriteByte(c)
			continue
		}
		i++
		switch template[i] {
		case 'u':
			b.WriteString(ldap.EscapeFilter(user))
		case 'n':
			b.WriteString(ldap.EscapeFilter(local))
		case 'd':
			b.WriteString(ldap.EscapeFilter(domain))
		case '%':
			b.WriteByte('%')
		default: // refused by Validate
			b.WriteByte('%')
			b.WriteByte(template[i])
		}
	}
	return b.String()
}

// ldapSource is the "ldap" route source. It keeps one connection to the directory, opened at
// the first lookup and reused; lookups take turns on it.
type ldapSource struct {
	cfg   LDAPConfig // with defaults
	attrs []string   // the attributes asked for
	tls   *tls.Config

	// lock is the mutex guarding conn and closed; a channel, so that a lookup waiting for
	// its turn gives up with its context.
	lock   chan struct{}
	conn   *ldap.Conn
	closed bool
}

var (
	_ Source    = (*ldapSource)(nil)
	_ io.Closer = (*ldapSource)(nil)
)

// maxLDAPEntries is the search's size limit: one entry answers, a second is an ambiguous
// filter.
const maxLDAPEntries = 2

// NewLDAPSource returns the LDAP source of c. It reads the CA file and checks the bind
// password file now, but does not contact the directory: one that is down at start fails
// lookups, not saslgate. The source is an io.Closer: Close closes its connection.
func NewLDAPSource(c LDAPConfig) (Source, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	u, _ := url.Parse(c.URL)
	s := &ldapSource{cfg: c, lock: make(chan struct{}, 1)}
	for _, a := range []string{c.HostAttribute, c.UserAttribute, c.SecretAttribute} {
		if a != "" {
			s.attrs = append(s.attrs, a)
		}
	}
	if u.Scheme == "ldaps" || c.StartTLS {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ldap: ca_file: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ldap: ca_file %s: no PEM certificates found", c.CAFile)
			}
		}
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: u.Hostname()}
	}
	if c.BindPasswordFile != "" {
		// Read at every connect, so a rotated password is used; read now so that a missing
		// or world-readable file fails at start.
		if _, err := s.password(); err != nil {
			return nil, fmt.Errorf("ldap: %w", err)
		}
	}
	return s, nil
}

func (*ldapSource) Name() string { return "ldap" }

// password reads the bind password file: one line, whose line end is not part of it.
func (s *ldapSource) password() (string, error) {
	b, _, err := readPrivateFile(s.cfg.BindPasswordFile, "bind_password_file")
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	switch {
	case len(b) == 0:
		// RFC 4513 §5.1.2: a DN with an empty password is an unauthenticated bind, which
		// servers accept as anonymous.
		return "", fmt.Errorf("bind_password_file %s is empty", s.cfg.BindPasswordFile)
	case bytes.ContainsAny(b, "\r\n\x00"):
		return "", fmt.Errorf("bind_password_file %s is not one line", s.cfg.BindPasswordFile)
	}
	return string(b), nil
}

// Lookup searches q.User's entry. No entry, or an entry without the host attribute, is a
// user the source does not know; several entries, or an attribute with several values, is
// an error.
func (s *ldapSource) Lookup(ctx context.Context, q Query) (Answer, bool, error) {
	req := ldap.NewSearchRequest(s.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		maxLDAPEntries, ldapTimeLimit(ctx), false, ldapFilter(s.cfg.Filter, q.User), s.attrs, nil)
	res, err := s.search(ctx, req)
	var a Answer
	var found bool
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		err = fmt.Errorf("filter %s matches more than %d entries", req.Filter, maxLDAPEntries)
	case err == nil:
		a, found, err = s.answer(req.Filter, res)
	}
	if err != nil {
		return Answer{}, false, fmt.Errorf("ldap: %s: search for %q: %w", s.cfg.URL, q.User, err)
	}
	return a, found, nil
}

// answer reads the result of the search with filter.
func (s *ldapSource) answer(filter string, res *ldap.SearchResult) (Answer, bool, error) {
	switch {
	case len(res.Entries) > 1:
		return Answer{}, false, fmt.Errorf("filter %s matches %d entries", filter, len(res.Entries))
	case len(res.Entries) == 0 && len(res.Referrals) > 0:
		// The entry may be in the directory the referral names: not knowing the user would
		// send them to the default pool, where their mailbox is not.
		return Answer{}, false, errors.New("the directory answered with a referral, which is not followed")
	case len(res.Entries) == 0:
		return Answer{}, false, nil
	}
	e := res.Entries[0]
	if attributeValues(e, s.cfg.HostAttribute) == nil {
		return Answer{}, false, nil
	}
	var a Answer
	var secret string
	for _, f := range []struct {
		attr string
		to   *string
	}{{s.cfg.HostAttribute, &a.Server}, {s.cfg.UserAttribute, &a.User}, {s.cfg.SecretAttribute, &secret}} {
		if f.attr == "" {
			continue
		}
		switch vs := attributeValues(e, f.attr); len(vs) {
		case 0:
		case 1:
			*f.to = vs[0]
		default:
			// The values are not shown: they may be secrets.
			return Answer{}, false, fmt.Errorf("entry %q has %d values of %s, want one", sanitize(e.DN), len(vs), f.attr)
		}
	}
	a.Secret = Secret(secret)
	return a, true, nil
}

// attributeValues returns the values of the attribute named name (attribute names are case
// insensitive, RFC 4512 §1.4).
func attributeValues(e *ldap.Entry, name string) []string {
	for _, a := range e.Attributes {
		if strings.EqualFold(a.Name, name) && len(a.Values) > 0 {
			return a.Values
		}
	}
	return nil
}

// ldapTimeLimit is the search's server-side time limit, in whole seconds: what is left of
// ctx, rounded up.
func ldapTimeLimit(ctx context.Context) int {
	d, ok := ctx.Deadline()
	if !ok {
		return int(DefaultRouteTimeout / time.Second)
	}
	return max(1, int(math.Ceil(time.Until(d).Seconds())))
}

// search runs req on the connection, opening it if needed. A connection that turns out to be
// broken (the directory restarted, an idle timeout closed it) is replaced once.
func (s *ldapSource) search(ctx context.Context, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the connection: %w", context.Cause(ctx))
	}
	defer func() { <-s.lock }()
	if s.closed {
		return nil, errors.New("source closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	for attempt := 1; ; attempt++ {
		if s.conn != nil && s.conn.IsClosing() {
			// Closed by the directory, or by the end of an earlier lookup's context.
			s.conn = nil
		}
		fresh := s.conn == nil
		if fresh {
			c, err := s.connect(ctx)
			if err != nil {
				return nil, err
			}
			s.conn = c
		}
		c := s.conn
		res, err := withConn(ctx, c, func() (*ldap.SearchResult, error) { return c.Search(req) })
		if err == nil || !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) && !c.IsClosing() {
			return res, err
		}
		c.Close()
		s.conn = nil
		if fresh || attempt > 1 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// withConn runs op on c with c's request timeout set to what is left of ctx, and c closed
// if ctx ends first (which the request timeout does not cover: a TLS handshake).
func withConn[T any](ctx context.Context, c *ldap.Conn, op func() (T, error)) (T, error) {
	timeout := DefaultRouteTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	c.SetTimeout(timeout)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	v, err := op()
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		} else if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			// The request timed out at the deadline, before ctx's own timer said so.
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
	}
	return v, err
}

// connect dials the directory, with StartTLS and the bind when configured.
func (s *ldapSource) connect(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: DefaultRouteTimeout}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	c, err := ldap.DialURL(s.cfg.URL, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(s.tls))
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if s.cfg.StartTLS {
		if _, err := withConn(ctx, c, func() (struct{}, error) { return struct{}{}, c.StartTLS(s.tls) }); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	}
	if s.cfg.BindDN != "" {
		pw, err := s.password()
		if err != nil {
			c.Close()
			return nil, err
		}
		if _, err := withConn(ctx, c, func() (struct{}, error) { return struct{}{}, c.Bind(s.cfg.BindDN, pw) }); err != nil {
			c.Close()
			return nil, fmt.Errorf("bind as %q: %w", s.cfg.BindDN, err)
		}
	}
	return c, nil
}

// Close closes the connection to the directory; lookups after it fail.
func (s *ldapSource) Close() error {
	s.lock <- struct{}{}
	defer func() { <-s.lock }()
	s.closed = true
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
