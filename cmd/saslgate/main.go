// Command saslgate is the IMAP/SMTP OAuth 2.0 gateway: it accepts OAUTHBEARER
// and XOAUTH2 logins, validates the tokens and logs in to an unchanged
// password-only mail server as the token's user. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `usage: saslgate <command> [flags]

commands:
  serve --config FILE          run the gateway
  check --config FILE          validate the config, reach the issuers and backends (exit 1 on failure)
  token verify --config FILE [TOKEN|-]
                               validate a token as the gateway would; print the user it maps to
  secrets derive|export        print a user's backend secret, or passdb lines for the backend
  route --config FILE USER     print where USER's logins go: route source, pool, member
  probe URL                    diagnostic IMAP/POP3/SMTP/ManageSieve client: TLS, capabilities, OAuth login
  login                        get a user an access token (device or browser flow), refreshed later
  demo                         run a self-contained demo (issuer, IMAP backend, gateway) on loopback
  version                      print the version

Each command takes -h for its flags.
`

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(ctx, args[1:], stderr)
	case "check":
		err = checkCmd(ctx, args[1:], stdout, stderr)
	case "token":
		err = tokenCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "secrets":
		err = secretsCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "route":
		err = routeCmd(ctx, args[1:], stdout, stderr)
	case "probe":
		err = probeCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "login":
		err = loginCmd(ctx, args[1:], stdout, stderr)
	case "demo":
		err = demoCmd(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "saslgate", versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "saslgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "saslgate: %v\n", err)
		return 1
	}
	return 0
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
