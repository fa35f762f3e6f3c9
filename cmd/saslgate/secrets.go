package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/passwd"
)

const secretsUsage = `usage:
  saslgate secrets genkey  FILE
  saslgate secrets derive  (--config FILE | --key-file FILE) USER
  saslgate secrets export  (--config FILE | --key-file FILE) --format dovecot-passwd [--scheme SCHEME] [USER...]

genkey creates FILE (mode 0600; never overwritten) holding a new HMAC key for source
"hmac": 32 random bytes written as one line of base64url text. A key file is one line of
text whose bytes are the key as they are, not decoded: any text of 16 bytes or more works,
and a shell's $(cat FILE) is the same key.
derive prints USER's backend secret: the one saslgate presents to the backend.
export prints one passdb line per USER (the users are read from standard input, one a
line, when none are given), hashed so the backend verifies the secret without storing it.
Schemes: SHA512-CRYPT (default, crypt(3) $6$) or SSHA512 (faster; enough for derived
secrets, which carry 256 random bits). Each proxied login costs the backend one verification.
`

func secretsCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "derive" && args[0] != "export" && args[0] != "genkey") {
		fmt.Fprint(stderr, secretsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return flag.ErrHelp
		}
		return errors.New("secrets: want the subcommand genkey, derive or export")
	}
	if args[0] == "genkey" {
		if len(args) != 2 || strings.HasPrefix(args[1], "-") {
			fmt.Fprint(stderr, secretsUsage)
			return errors.New("secrets genkey: exactly one FILE")
		}
		_, err := backends.NewHMACKeyFile(args[1])
		return err
	}
	sub := args[0]
	fs := flag.NewFlagSet("secrets "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, secretsUsage+"\n"); fs.PrintDefaults() }
	path := fs.String("config", "", "configuration `file` (its secrets section)")
	keyFile := fs.String("key-file", "", "HMAC key `file`, instead of --config (as secrets.hmac_key_file)")
	format := fs.String("format", "dovecot-passwd", "export `format`: dovecot-passwd")
	scheme := fs.String("scheme", passwd.SHA512Crypt, "export password `scheme`: "+strings.Join(passwd.Schemes, ", "))
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var sc backends.SecretsConfig
	switch {
	case *path != "" && *keyFile != "":
		return errors.New("secrets: --config and --key-file are alternatives")
	case *path != "":
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		sc = cfg.Secrets
	case *keyFile != "":
		sc = backends.SecretsConfig{Source: "hmac", HMACKeyFile: *keyFile}
	default:
		fs.Usage()
		return errors.New("secrets: --config or --key-file is required")
	}
	src, err := backends.NewSecretSource(sc, nil)
	if err != nil {
		return err
	}

	if sub == "derive" {
		if fs.NArg() != 1 {
			fs.Usage()
			return errors.New("secrets derive: exactly one USER")
		}
		secret, err := src.Secret(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, secret.Reveal())
		return err
	}

	if *format != "dovecot-passwd" {
		return fmt.Errorf("secrets export: unknown format %q (want dovecot-passwd)", *format)
	}
	users := fs.Args()
	if len(users) == 0 {
		if users, err = readUsers(stdin); err != nil {
			return err
		}
	}
	if len(users) == 0 {
		return errors.New("secrets export: no users given")
	}
	w := bufio.NewWriter(stdout)
	for _, u := range users {
		secret, err := src.Secret(ctx, u)
		if err != nil {
			return err
		}
		h, err := passwd.Hash(*scheme, secret.Reveal())
		if err != nil {
			return err
		}
		line, err := passwd.DovecotLine(u, h)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, line)
	}
	return w.Flush()
}

// readUsers reads one username a line; blank lines and # comments are skipped.
func readUsers(r io.Reader) ([]string, error) {
	var users []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		u := strings.TrimSpace(sc.Text())
		if u != "" && !strings.HasPrefix(u, "#") {
			users = append(users, u)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	return users, nil
}
