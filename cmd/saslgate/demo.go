package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/internal/demoissuer"
	"github.com/saslgate/saslgate/introspect"
	"github.com/saslgate/saslgate/proxy"
	proxyimap "github.com/saslgate/saslgate/proxy/imap"
	proxysmtp "github.com/saslgate/saslgate/proxy/smtp"
	"github.com/saslgate/saslgate/tls/certs"
)

// demoUsers are the demo issuer's password-grant users (demo only).
var demoUsers = map[string]string{"alice": "alice", "bob": "bob"}

// demoCmd runs a demo issuer, an in-memory IMAP backend and saslgate in front
// of it, all on loopback, and prints commands that work as printed.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	imaps := fs.String("imaps", "127.0.0.1:9993", "IMAP implicit-TLS listen `address`")
	imapSTARTTLS := fs.String("imap", "127.0.0.1:9143", "IMAP STARTTLS listen `address`")
	smtps := fs.String("smtps", "127.0.0.1:9465", "SMTP submission implicit-TLS listen `address`")
	submission := fs.String("submission", "127.0.0.1:9587", "SMTP submission STARTTLS listen `address`")
	issuerAddr := fs.String("issuer", "127.0.0.1:9980", "demo issuer listen `address`")
	verbose := fs.Bool("v", false, "log every connection")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	dir, err := os.MkdirTemp("", "saslgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The issuer.
	issuerLn, err := net.Listen("tcp", *issuerAddr)
	if err != nil {
		return fmt.Errorf("demo issuer: %w", err)
	}
	issuerURL := "http://" + issuerLn.Addr().String()
	issuer, err := demoissuer.New(issuerURL, demoUsers, demoissuer.WithAudience("saslgate"))
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: issuer.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go httpSrv.Serve(issuerLn)
	defer httpSrv.Close()

	// The backend: go-imap's in-memory server, whose passwords are the
	// HMAC-derived per-user secrets saslgate will present.
	keyFile := filepath.Join(dir, "hmac.key")
	key, err := backends.NewHMACKeyFile(keyFile)
	if err != nil {
		return err
	}
	mem := imapmemserver.New()
	submissionBackend := &demoSubmission{key: key, mailboxes: map[string]*imapmemserver.User{}}
	for user := range demoUsers {
		u := imapmemserver.NewUser(user, backends.DeriveSecret(key, user).Reveal())
		if err := seedInbox(u, user); err != nil {
			return err
		}
		mem.AddUser(u)
		submissionBackend.mailboxes[user] = u
	}
	smtpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	smtpBackend := gosmtp.NewServer(submissionBackend)
	smtpBackend.Domain = "demo-backend.localhost"
	smtpBackend.AllowInsecureAuth = true // loopback only, inside this process
	go smtpBackend.Serve(smtpLn)
	defer smtpBackend.Close()
	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	backend := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true, // loopback only, inside this process
		Logger:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	})
	go backend.Serve(backendLn)
	defer backend.Close()

	// saslgate itself, configured the way serve is, from a generated file set.
	cert, certPEM, err := certs.SelfSigned("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	caFile := filepath.Join(dir, "demo-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		return err
	}
	// The demo's backends are an IMAP server and a submission server: it serves those two
	// front ends, by their registrations.
	imapName, smtpName := proxyimap.Protocol.Name, proxysmtp.Protocol.Name
	cfg := &fileConfig{
		Listeners: []proxy.ListenerConfig{
			{Name: "imaps", Protocol: imapName, Address: *imaps, TLS: proxy.TLSImplicit},
			{Name: "imap", Protocol: imapName, Address: *imapSTARTTLS, TLS: proxy.TLSStartTLS},
			{Name: "smtps", Protocol: smtpName, Address: *smtps, TLS: proxy.TLSImplicit},
			{Name: "submission", Protocol: smtpName, Address: *submission, TLS: proxy.TLSStartTLS},
		},
		Sections: map[string]proxy.Section{
			imapName: &proxyimap.Config{Backend: backends.Config{Address: backendLn.Addr().String(), TLS: "none"}},
			smtpName: &proxysmtp.Config{
				Backend:  backends.Config{Address: smtpLn.Addr().String(), TLS: "none", Hostname: "saslgate-demo.localhost"},
				Hostname: "saslgate-demo.localhost",
			},
		},
		Secrets: backends.SecretsConfig{Source: "hmac", HMACKeyFile: keyFile},
		Tokens: introspect.Config{Issuers: []introspect.IssuerConfig{{
			Issuer:        issuerURL,
			Mode:          "jwt",
			Audience:      []string{"saslgate"},
			UsernameClaim: "sub",
		}}, Protocols: protocolNames()},
	}
	if err := errors.Join(append(cfg.validateSections(), cfg.Secrets.Validate(), cfg.Tokens.Validate())...); err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	g, err := startGateway(ctx, cfg, certs.FromCertificate(cert), logger)
	if err != nil {
		return err
	}

	token, err := issuer.Mint(demoissuer.Claims{Subject: "alice", Email: "alice@example.com", Audience: []string{"saslgate"}})
	if err != nil {
		return err
	}
	err = demoText.Execute(stdout, map[string]string{
		"Issuer": issuerURL, "IMAPS": g.addrs["imaps"].String(), "IMAP": g.addrs["imap"].String(),
		"SMTPS": g.addrs["smtps"].String(), "Submission": g.addrs["submission"].String(),
		"CA": caFile, "Token": token,
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return g.shutdown(sctx)
}

// literal is an in-memory message for imapmemserver's Append.
type literal struct {
	r interface {
		io.Reader
		Size() int64
	}
}

func (l literal) Read(b []byte) (int, error) { return l.r.Read(b) }
func (l literal) Size() int64                { return l.r.Size() }

func seedInbox(u *imapmemserver.User, user string) error {
	if err := u.Create("INBOX", nil); err != nil {
		return err
	}
	msg := strings.ReplaceAll(`From: saslgate demo <demo@example.com>
To: `+user+`@example.com
Subject: Welcome to saslgate
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <welcome-`+user+`@saslgate.demo>
Content-Type: text/plain; charset=utf-8

Hello `+user+`, you logged in with an OAuth 2.0 access token.
`, "\n", "\r\n")
	_, err := u.Append("INBOX", literal{strings.NewReader(msg)}, &imap.AppendOptions{})
	return err
}

var demoText = template.Must(template.New("demo").Parse(`saslgate demo is running (Ctrl-C to stop). Everything is on loopback and demo-only.
The demo covers IMAP and SMTP submission only; saslgate's POP3 and ManageSieve doors are not in it.

  demo issuer      {{.Issuer}}  (password grant: alice/alice, bob/bob)
  IMAPS            {{.IMAPS}}
  IMAP + STARTTLS  {{.IMAP}}
  SMTPS            {{.SMTPS}}
  Submission       {{.Submission}}  (STARTTLS)
  CA certificate   {{.CA}}

A token for alice (valid one hour):

TOKEN={{.Token}}

Or get a fresh one from the issuer:

TOKEN=$(curl -s -d grant_type=password -d username=alice -d password=alice {{.Issuer}}/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

List the mailboxes and read the first message with curl (OAUTHBEARER):

curl --cacert {{.CA}} --user alice: --oauth2-bearer "$TOKEN" imaps://{{.IMAPS}}/
curl --cacert {{.CA}} --user alice: --oauth2-bearer "$TOKEN" 'imaps://{{.IMAPS}}/INBOX;UID=1'

The same over STARTTLS:

curl --cacert {{.CA}} --ssl-reqd --user alice: --oauth2-bearer "$TOKEN" imap://{{.IMAP}}/

Send alice a message through the SMTP side (OAUTHBEARER), then list INBOX again: it holds two.

printf 'From: alice@example.com\r\nTo: alice@example.com\r\nSubject: Sent through saslgate\r\n\r\nHello.\r\n' | curl --cacert {{.CA}} --user alice: --oauth2-bearer "$TOKEN" --mail-from alice@example.com --mail-rcpt alice@example.com --upload-file - smtps://{{.SMTPS}}
curl --cacert {{.CA}} --user alice: --oauth2-bearer "$TOKEN" 'imaps://{{.IMAPS}}/INBOX?ALL'

With python imaplib (XOAUTH2):

TOKEN="$TOKEN" python3 -c 'import imaplib,os,ssl; h,p="{{.IMAPS}}".rsplit(":",1); M=imaplib.IMAP4_SSL(h,int(p),ssl_context=ssl.create_default_context(cafile="{{.CA}}")); M.authenticate("XOAUTH2", lambda _: ("user=alice\x01auth=Bearer "+os.environ["TOKEN"]+"\x01\x01").encode()); M.select("INBOX"); print(M.fetch("1","(BODY[HEADER.FIELDS (SUBJECT)])")[1][0][1].decode())' 
`))
