package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
)

// Mailbox users known to Dovecot. mailUser is alice's mailbox; its name is the
// token's email claim (username_claim: email, no normalisation). carol exists at the
// IdP side only through /test/mint and has no Dovecot password, so the proxy's backend
// login for her is rejected.
const (
	mailUser   = "alice@example.com"
	mailUser2  = "bob@example.com"
	noDovecot  = "carol@example.com"
	seededBody = "From: Test Sender <sender@example.com>\r\n" +
		"To: Alice <alice@example.com>\r\n" +
		"Subject: saslgate e2e seed\r\n" +
		"Message-ID: <seed-1@saslgate.e2e>\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
		"\r\n" +
		"Hello from the saslgate end-to-end test.\r\n"
)

// dovecot is the real Dovecot backend: plaintext IMAP on a loopback port, passwd-file
// passdb with the HMAC-derived per-user secrets saslgate will present. With mail
// submission it also serves Postfix: LMTP delivery into the same maildirs and a SASL
// auth socket checking the same secrets.
type dovecot struct {
	addr       string
	lmtpAddr   string // "" without mail submission
	pop3Addr   string // plaintext POP3 on loopback; "" without dovecotOptions.pop3
	sieveAddr  string // plaintext ManageSieve on loopback; "" without dovecotOptions.sieve
	authSocket string // Postfix's smtpd_sasl_path; "" without mail submission
	conf       string
	log        string
	proc       *proc
}

// startDovecot writes a self-contained Dovecot configuration under dir and runs
// `dovecot -F -c conf`. key is saslgate's HMAC key: each user's {PLAIN} password is
// backends.DeriveSecret(key, user), the same function the proxy uses. With submission,
// Dovecot also listens for LMTP and offers its auth service to Postfix.
func startDovecot(ctx context.Context, dir string, key []byte, submission bool) (*dovecot, error) {
	return startDovecotWith(ctx, dir, dovecotOptions{key: key, submission: submission})
}

// dovecotOptions are startDovecot's parameters.
type dovecotOptions struct {
	key        []byte
	submission bool
	// pop3 adds the pop3 protocol, served in plaintext on a loopback port (dovecot.pop3Addr)
	// by pop3-login (Debian's dovecot-pop3d), from the same passdb and maildirs.
	pop3 bool
	// sieve adds the sieve protocol (ManageSieve, RFC 5804), served in plaintext on a loopback
	// port (dovecot.sieveAddr) by managesieve-login (Debian's dovecot-managesieved), with
	// Pigeonhole's script store in each user's home (dovecot-sieve).
	sieve bool
	// master, when set, adds a master passdb holding this master user, who logs in as any
	// user (SASL PLAIN authzid, or user*master with auth_master_user_separator = *). Without
	// a key it also replaces the users' derived secrets: their passdb entries have no
	// password. With a key the users keep them: a master passdb only answers logins that
	// name its master user, and no e2e username contains the separator.
	master *masterUser
	// oauth2IntrospectionURL, when set, adds an oauth2 passdb for the mechanisms OAUTHBEARER
	// and XOAUTH2 (which the passwd-file passdb then no longer serves): Dovecot validates
	// the token itself by POSTing it to this RFC 7662 endpoint (the URL carries the
	// introspecting client's credentials), and takes the user from its email member.
	oauth2IntrospectionURL string
}

// masterUser is a Dovecot master user and its password.
type masterUser struct{ name, secret string }

// startDovecotWith is startDovecot with every option.
func startDovecotWith(ctx context.Context, dir string, o dovecotOptions) (*dovecot, error) {
	key, submission := o.key, o.submission
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	d := &dovecot{
		addr: addr,
		conf: filepath.Join(dir, "dovecot.conf"),
		log:  filepath.Join(dir, "dovecot.log"),
	}
	protocols := "imap"
	if submission {
		if d.lmtpAddr, err = freePort(); err != nil {
			return nil, err
		}
		d.authSocket = filepath.Join(dir, "dovecot-auth")
		protocols = "imap lmtp"
	}
	if o.pop3 {
		if d.pop3Addr, err = freePort(); err != nil {
			return nil, err
		}
		protocols += " pop3"
	}
	if o.sieve {
		if d.sieveAddr, err = freePort(); err != nil {
			return nil, err
		}
		protocols += " sieve"
	}

	// Dovecot refuses to run mail processes as root and drops privileges for its
	// internal and login processes; as root use the packaged dovecot/dovenull users
	// and let mail belong to nobody. As non-root everything runs as the current user.
	internalUser, loginUser := "dovecot", "dovenull"
	mailOwner, err := user.Lookup("nobody")
	if os.Geteuid() != 0 {
		mailOwner, err = user.Current()
		internalUser, loginUser = mailOwner.Username, mailOwner.Username
	}
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(mailOwner.Uid)
	gid, _ := strconv.Atoi(mailOwner.Gid)

	mailRoot := filepath.Join(dir, "mail")
	for _, u := range []string{mailUser, mailUser2} {
		for _, sub := range []string{"new", "cur", "tmp"} {
			if err := os.MkdirAll(filepath.Join(mailRoot, u, "Maildir", sub), 0o700); err != nil {
				return nil, err
			}
		}
	}
	msg := filepath.Join(mailRoot, mailUser, "Maildir", "new", "1700000000.M1P1.saslgate-e2e")
	if err := os.WriteFile(msg, []byte(seededBody), 0o600); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		err := filepath.Walk(mailRoot, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		})
		if err != nil {
			return nil, err
		}
	}

	var passwd strings.Builder
	for _, u := range []string{mailUser, mailUser2} {
		if o.master != nil && key == nil {
			fmt.Fprintf(&passwd, "%s:{CRYPT}*\n", u) // matches no password: only the master user logs in as u
			continue
		}
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s\n", u, backends.DeriveSecret(key, u).Reveal())
	}
	passwdPath := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwdPath, []byte(passwd.String()), 0o644); err != nil {
		return nil, err
	}
	masterConf := ""
	if o.master != nil {
		masterPath := filepath.Join(dir, "passwd.master")
		if err := os.WriteFile(masterPath, []byte(o.master.name+":{PLAIN}"+o.master.secret+"\n"), 0o644); err != nil {
			return nil, err
		}
		// pass = yes: the user logged in as must also exist in the regular passdb.
		masterConf = fmt.Sprintf(`auth_master_user_separator = *
passdb {
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN username_format=%%u %s
}
`, masterPath)
	}
	mechanisms, passwdMechs, oauth2Conf := "plain login", "", ""
	if o.oauth2IntrospectionURL != "" {
		extPath := filepath.Join(dir, "dovecot-oauth2.conf.ext")
		// Dovecot 2.3's db-oauth2 settings (dovecot-oauth2.conf.ext): with no tokeninfo_url
		// the introspection is the validation, POSTing token=<token> with the URL's
		// credentials as HTTP Basic; active must be true; debug adds the HTTP client's lines.
		ext := fmt.Sprintf(`introspection_mode = post
introspection_url = %s
username_attribute = email
active_attribute = active
active_value = true
timeout_msecs = 10000
debug = yes
`, o.oauth2IntrospectionURL)
		if err := os.WriteFile(extPath, []byte(ext), 0o644); err != nil {
			return nil, err
		}
		mechanisms += " oauthbearer xoauth2"
		passwdMechs = "\n  mechanisms = plain login"
		oauth2Conf = fmt.Sprintf(`passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %s
}
`, extPath)
	}
	for _, sub := range []string{"run", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}

	// Dovecot 2.3 spelling (disable_plaintext_auth); 2.4 renamed it to
	// auth_allow_cleartext and changed passdb/userdb syntax, see dovecotConf24.
	conf := fmt.Sprintf(`# generated by saslgate e2e
protocols = %[9]s
listen = 127.0.0.1
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[2]s
auth_verbose = yes
auth_failure_delay = 0
# saslgate connects from loopback and, with forward_client_address, names the real
# client in ID x-originating-ip, which Dovecot honours only from trusted networks.
login_trusted_networks = 127.0.0.1/32
ssl = no
disable_plaintext_auth = no
auth_mechanisms = %[10]s
default_internal_user = %[3]s
default_login_user = %[4]s
first_valid_uid = %[5]d
first_valid_gid = %[6]d
mail_location = maildir:%[1]s/mail/%%u/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[7]s%[11]s
}
userdb {
  driver = static
  args = uid=%[5]d gid=%[6]d home=%[1]s/mail/%%u
}
# Every backend login comes from saslgate's one address: Dovecot's auth penalty
# (per client IP, 2-15 s after a failed login, shared by IMAP and Postfix's SASL)
# would make one rejected secret slow down every later login. Without its anvil
# socket the auth process disables the penalty (auth-penalty.c).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[8]s
  }
  inet_listener imaps {
    port = 0
  }
}
`, dir, d.log, internalUser, loginUser, uid, gid, passwdPath, port, protocols, mechanisms, passwdMechs)
	conf += masterConf + oauth2Conf
	if oauth2Conf != "" {
		// The oauth2 passdb logs its steps only at auth_debug (which also logs the passdb's
		// token field: a test-only log, of tokens the test revokes or lets expire).
		conf += "auth_debug = yes\n"
	}
	if submission {
		_, lmtpPort, _ := net.SplitHostPort(d.lmtpAddr)
		conf += submissionDovecot(d.authSocket, lmtpPort)
	}
	if o.pop3 {
		conf += pop3Dovecot(d.pop3Addr) // pop3_test.go
	}
	if o.sieve {
		conf += sieveDovecot(d.sieveAddr) // sieve_test.go
	}
	if os.Geteuid() != 0 {
		conf += nonRootDovecot
	}
	if v := dovecotVersion(); strings.HasPrefix(v, "2.4") || strings.HasPrefix(v, "3.") {
		return nil, fmt.Errorf("dovecot %s: only the 2.3 configuration syntax is generated; extend dovecot_test.go", v)
	}
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// The temp dir is created 0700; Dovecot's unprivileged processes need to traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}

	d.proc, err = startProc("dovecot", filepath.Join(dir, "dovecot.out"), nil, nil, 0, "dovecot", "-F", "-c", d.conf)
	if err != nil {
		return d, err
	}
	if err := waitPort(ctx, addr, d.proc); err != nil {
		return d, err
	}
	if d.lmtpAddr != "" {
		if err := waitPort(ctx, d.lmtpAddr, d.proc); err != nil {
			return d, err
		}
	}
	if d.pop3Addr != "" {
		if err := waitPort(ctx, d.pop3Addr, d.proc); err != nil {
			return d, err
		}
	}
	if d.sieveAddr != "" {
		if err := waitPort(ctx, d.sieveAddr, d.proc); err != nil {
			return d, err
		}
	}
	// Ready means the auth process answers, not just that the port is open; this also
	// checks that the derived secret logs in, before the proxy depends on it.
	deadline := time.Now().Add(15 * time.Second)
	user, pass := mailUser, backends.DeriveSecret(key, mailUser).Reveal()
	if o.master != nil && key == nil {
		user, pass = mailUser+"*"+o.master.name, o.master.secret
	}
	for {
		err = d.checkLogin(user, pass)
		if err == nil || time.Now().After(deadline) {
			return d, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// submissionDovecot is what Postfix needs from Dovecot: LMTP on a loopback port (the
// static userdb makes LMTP check recipients against the passwd-file, so only alice and
// bob exist) and an auth client socket outside base_dir for smtpd_sasl_type = dovecot.
// Mode 0666 because Postfix's smtpd runs as the postfix user; nothing but loopback
// processes can reach a socket in the temp dir anyway.
func submissionDovecot(authSocket, lmtpPort string) string {
	return fmt.Sprintf(`service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %s
  }
}
service auth {
  unix_listener %s {
    mode = 0666
  }
}
`, lmtpPort, authSocket)
}

// nonRootDovecot lets an unprivileged user run Dovecot 2.3: no chroot, and no
// chown of sockets to the packaged dovecot group.
const nonRootDovecot = `service imap-login {
  chroot =
}
service anvil {
  chroot =
}
service stats {
  unix_listener stats-writer {
    group =
    mode = 0666
  }
}
service imap-hibernate {
  unix_listener imap-hibernate {
    group =
  }
}
service dict {
  unix_listener dict {
    group =
  }
}
service dict-async {
  unix_listener dict-async {
    group =
  }
}
`

// checkLogin logs in directly to Dovecot with LOGIN.
func (d *dovecot) checkLogin(user, pass string) error {
	c, err := net.DialTimeout("tcp", d.addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		// "* OK Waiting for authentication process to respond.." precedes the real
		// greeting while the auth process starts.
		if strings.Contains(line, "[CAPABILITY") {
			break
		}
		if !strings.HasPrefix(line, "* OK") {
			return fmt.Errorf("dovecot greeting: %q", line)
		}
	}
	fmt.Fprintf(c, "a LOGIN %s %s\r\n", imapQuote(user), imapQuote(pass))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "a ") {
			if !strings.HasPrefix(line, "a OK") {
				return fmt.Errorf("dovecot LOGIN %s: %q", user, strings.TrimSpace(line))
			}
			fmt.Fprintf(c, "b LOGOUT\r\n")
			return nil
		}
	}
}

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func dovecotVersion() string {
	out, err := exec.Command("dovecot", "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
