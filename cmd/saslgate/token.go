package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// tokenUsage is the help of token verify; --protocol takes registered protocol names.
var tokenUsage = `usage: saslgate token verify --config FILE [--protocol ` + strings.Join(protocolNames(), ",") + `] [--user AUTHZID] [--login] [TOKEN|-]

Validates an access token exactly as the gateway would (issuer keys, RFC 9068 checks,
audience, scopes per protocol, username mapping, authzid), prints each check's outcome and
the backend username it maps to. The token is read from standard input when it is "-" or
absent. Exit 1 if the token is not accepted for every protocol asked for.
`

func tokenCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(stderr, tokenUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return flag.ErrHelp
		}
		return errors.New("token: want the subcommand verify")
	}
	fs := flag.NewFlagSet("token verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, tokenUsage+"\n"); fs.PrintDefaults() }
	path := fs.String("config", "/etc/saslgate/saslgate.yaml", "configuration `file`")
	protoFlag := fs.String("protocol", "", "comma-separated `protocols` to check (default: those of the configured listeners)")
	authzid := fs.String("user", "", "check the SASL authorization identity `AUTHZID` (a= / user=) against the token's user")
	login := fs.Bool("login", false, "also log in to the backend as the mapped user")
	verbose := fs.Bool("v", false, "log the validator's requests to the identity provider")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return errors.New("token verify: at most one token")
	}
	token, err := readToken(fs.Arg(0), stdin)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	v, err := introspect.New(ctx, cfg.Tokens, introspect.WithLogger(logger))
	if err != nil {
		return err
	}

	r := &report{w: stdout}
	r.ok("token", "%s", describeToken(token))
	protos := listenerProtocols(cfg)
	if *protoFlag != "" {
		protos = strings.Split(*protoFlag, ",")
	}
	var user string
	var accepted []string // the protocols the token is good for: only those are logged in to
	for _, proto := range protos {
		// The same call the listeners make, with no host/port kvpairs and no binding.
		id, err := proxy.Authorize(ctx, v, proxy.ListenerConfig{}, proxy.Conn{}, proto, sasl.Credentials{
			Mechanism: sasl.OAuthBearer, Token: token, AuthzID: *authzid, CBFlag: 'n',
		})
		if err != nil {
			r.fail(proto, verdict(err))
			continue
		}
		user = id.User
		accepted = append(accepted, proto)
		exp := "no expiry given"
		if !id.Expiry.IsZero() {
			exp = "expires " + id.Expiry.UTC().Format(time.RFC3339) + " (in " + time.Until(id.Expiry).Round(time.Second).String() + ")"
		}
		r.ok(proto, "accepted for user %s (issuer %s, client %s, scopes %q, %s)", id.User, id.Issuer, cmpOr(id.ClientID, "-"), strings.Join(id.Scopes, " "), exp)
	}
	if user != "" {
		var secret backends.Secret
		var err error
		if cfg.needsSecrets() { // else no backend in use logs in with a user's secret
			var secrets backends.SecretSource
			secrets, err = backends.NewSecretSource(cfg.Secrets, logger)
			if err == nil {
				secret, err = secrets.Secret(ctx, user)
			}
			r.check("secret", err, "backend secret for %s found (source %s)", user, cfg.Secrets.Source)
		}
		if *login && err == nil {
			router, err := newRouter(cfg, logger, nil)
			if r.check("routes", err, "%d pool(s), %d route source(s)", len(cfg.poolConfigs()), len(cfg.Routes.Sources)) {
				defer router.Close()
				for _, proto := range accepted {
					rt, err := router.Route(ctx, backends.Query{Protocol: proto, User: user, Mechanism: "OAUTHBEARER", Attempt: 1})
					if !r.check("route", err, "%s", describeRoute(proto, user, rt)) {
						continue
					}
					err = backendLogin(ctx, backendCheck{proto, rt.Pool.Name, rt.Config}, fixedSecret{user, secret}, rt)
					r.check("login", err, "%s backend %s accepts %s", proto, rt.Config.Address, rt.User)
				}
			}
		}
		fmt.Fprintf(stdout, "user %s\n", user)
	}
	return r.result()
}

// fixedSecret is a SecretSource of one secret already looked up.
type fixedSecret struct {
	user   string
	secret backends.Secret
}

func (f fixedSecret) Secret(_ context.Context, user string) (backends.Secret, error) {
	if user != f.user {
		return "", backends.ErrUnknownUser
	}
	return f.secret, nil
}

// verdict phrases an Authorize error as the client would see it, from the same
// classification the listeners answer from: the RFC 7628 status, then the reason.
func verdict(err error) error {
	switch o := proxy.Classify(err); {
	case o.Kind == proxy.Refused && o.Failure.Scope != "":
		return fmt.Errorf("%s (needs scope %q): %v", o.Result(), o.Failure.Scope, o.Failure.Err)
	case o.Kind == proxy.Refused:
		return fmt.Errorf("%s: %v", o.Result(), o.Failure.Err)
	case o.Kind == proxy.IdPUnavailable:
		return fmt.Errorf("temporary failure (clients would see NO [UNAVAILABLE] / 454): %v", err)
	}
	return err
}

// listenerProtocols are the distinct protocols of the configured listeners.
func listenerProtocols(cfg *fileConfig) []string {
	var out []string
	for _, l := range cfg.Listeners {
		if !slices.Contains(out, l.Protocol) {
			out = append(out, l.Protocol)
		}
	}
	if len(out) == 0 { // not from loadConfig, which requires a listener
		out = protocolNames()
	}
	return out
}

// readToken returns arg, or the first line of stdin when arg is "" or "-".
func readToken(arg string, stdin io.Reader) (string, error) {
	if arg != "" && arg != "-" {
		return strings.TrimSpace(arg), nil
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 1<<20)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the token: %w", err)
	}
	token := strings.TrimSpace(line)
	if token == "" {
		return "", errors.New("no token given (pass it as an argument or on standard input)")
	}
	return token, nil
}

// describeToken says what the token looks like without verifying it: a JWT's header and the
// claims that matter for routing and policy, or that it is opaque.
func describeToken(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return fmt.Sprintf("opaque (%d bytes): checked by the introspection or userinfo issuers", len(token))
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	var c struct {
		Iss      string          `json:"iss"`
		Sub      string          `json:"sub"`
		Aud      json.RawMessage `json:"aud"`
		ClientID string          `json:"client_id"`
		Scope    string          `json:"scope"`
		Exp      int64           `json:"exp"`
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	if err1 != nil || err2 != nil || json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		return fmt.Sprintf("three dot-separated parts but not a decodable JWT (%d bytes)", len(token))
	}
	exp := "none"
	if c.Exp != 0 {
		exp = time.Unix(c.Exp, 0).UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("JWT alg=%s kid=%s typ=%s; unverified claims: iss=%s sub=%s aud=%s client_id=%s scope=%q exp=%s",
		cmpOr(h.Alg, "-"), cmpOr(h.Kid, "-"), cmpOr(h.Typ, "-"), c.Iss, c.Sub, string(c.Aud), cmpOr(c.ClientID, "-"), c.Scope, exp)
}

// openTokenFile reads a token from a file, for commands that take --token-file.
func openTokenFile(path string) (string, error) {
	if path == "-" {
		return readToken("-", os.Stdin)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	return token, nil
}
