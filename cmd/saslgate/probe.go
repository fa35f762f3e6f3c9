package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/saslgate/saslgate/internal/probe"
	"github.com/saslgate/saslgate/proxy/sasl"
)

const probeUsage = `usage: saslgate probe [flags] URL

URL is one of (default port in brackets)
  IMAP         imaps://HOST[:PORT] [993], imap+starttls:// [143], imap:// (no TLS) [143]
  POP3         pop3s:// [995], pop3+stls:// [110], pop3:// (no TLS) [110]
  SMTP         smtps:// [465], smtp+starttls:// [587], smtp:// (no TLS) [25]
  ManageSieve  sieve:// (STARTTLS) [4190], sieve+implicit://HOST:PORT (implicit TLS),
               sieve+plaintext:// (no TLS) [4190]
Connects, shows the TLS session and capabilities and, with a token, authenticates with
OAUTHBEARER (or --mech XOAUTH2). The transcript is printed with the token redacted.
Exit 1 if the connection or the authentication fails.

`

func probeCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, probeUsage); fs.PrintDefaults() }
	token := fs.String("token", "", "access `TOKEN` (\"-\": read it from standard input); without one, no authentication")
	tokenFile := fs.String("token-file", "", "read the access token from `FILE`")
	mech := fs.String("mech", sasl.OAuthBearer, "SASL `mechanism`: OAUTHBEARER or XOAUTH2")
	user := fs.String("user", "", "authorization identity (OAUTHBEARER a=, XOAUTH2 user=)")
	caFile := fs.String("ca-file", "", "PEM `file` of CAs to trust instead of the system roots")
	serverName := fs.String("server-name", "", "name to verify in the server certificate (default: the URL's host)")
	insecure := fs.Bool("insecure-skip-verify", false, "accept any server certificate (diagnosis only)")
	certFile := fs.String("cert", "", "client certificate PEM `file` (RFC 8705 certificate-bound tokens)")
	keyFile := fs.String("key", "", "client certificate key PEM `file`")
	binding := fs.String("channel-binding", "", "send channel binding: tls-exporter or tls-server-end-point")
	noIR := fs.Bool("no-initial-response", false, "wait for the server's challenge instead of sending the credentials with the command")
	host := fs.String("host", "", "OAUTHBEARER host= (default: the URL's host)")
	port := fs.Int("port", 0, "OAUTHBEARER port= (default: the URL's port)")
	timeout := fs.Duration("timeout", 30*time.Second, "bound for the whole probe")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("probe: exactly one URL")
	}
	target, err := probe.ParseURL(fs.Arg(0))
	if err != nil {
		return err
	}
	tok := ""
	switch {
	case *token != "" && *tokenFile != "":
		return errors.New("probe: --token and --token-file are alternatives")
	case *token != "":
		if tok, err = readToken(*token, stdin); err != nil {
			return err
		}
	case *tokenFile != "":
		if tok, err = openTokenFile(*tokenFile); err != nil {
			return err
		}
	}
	m := strings.ToUpper(*mech)
	if tok == "" {
		m = ""
	}
	tc := &tls.Config{ServerName: *serverName, InsecureSkipVerify: *insecure}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("probe: %s: no PEM certificates", *caFile)
		}
	}
	if *certFile != "" || *keyFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("probe: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	res, err := probe.Run(ctx, probe.Options{
		Target: target, TLSConfig: tc, Mechanism: m, User: *user, Token: tok,
		Host: *host, Port: *port, ChannelBinding: *binding, NoInitialResponse: *noIR,
		Transcript: stdout, Timeout: *timeout,
	})
	switch {
	case err != nil:
		return err
	case m == "":
		fmt.Fprintf(stdout, "probe: %s answers (no token given, so no authentication)\n", target.Address)
	default:
		fmt.Fprintf(stdout, "probe: authenticated with %s: %s\n", m, res.Final)
	}
	return nil
}
