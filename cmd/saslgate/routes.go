package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/saslgate/saslgate/backends"
)

// newRouter builds the pools and route sources cfg describes; obs may be nil.
func newRouter(cfg *fileConfig, logger *slog.Logger, obs backends.RouteObserver) (*backends.Router, error) {
	pools, err := backends.NewPools(cfg.poolConfigs(), cfg.defaultPools())
	if err != nil {
		return nil, err
	}
	sources, err := backends.NewSources(cfg.Routes, pools, logger)
	if err != nil {
		return nil, err
	}
	return backends.NewRouter(pools, sources, cfg.Routes, obs), nil
}

// describeRoute is one line saying where user's logins of protocol go.
func describeRoute(protocol, user string, rt backends.Route) string {
	if rt.Pool == nil {
		return fmt.Sprintf("%s %s: no route", protocol, user)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s → %s pool %s, ", protocol, user, protocol, rt.Pool.Name)
	if rt.Member != nil {
		fmt.Fprintf(&b, "member %s", rt.Member.Address())
	} else {
		fmt.Fprintf(&b, "server %s (not a member; allow_non_members)", rt.Config.Address)
	}
	fmt.Fprintf(&b, " (route from %s)", rt.Source)
	if rt.User != user {
		fmt.Fprintf(&b, " as backend user %s", rt.User)
	}
	switch {
	case rt.Config.PassesToken():
		b.WriteString("; login token: the client's access token")
	case !rt.Config.NeedsUserSecret():
		b.WriteString("; " + loginDetail(rt.Config))
	case rt.Secret != "":
		b.WriteString("; the secret the route source gave (redacted)")
	default:
		b.WriteString("; the user's secret from the secrets section")
	}
	return b.String()
}

// routeCmd prints where a user's logins go: for each protocol, the route source that answers,
// the pool and the member chosen.
func routeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/saslgate/saslgate.yaml", "configuration `file`")
	protocol := fs.String("protocol", "", "only this `protocol` (default: every protocol a listener serves)")
	health := fs.Bool("health", true, "check each health-checked member's greeting once first, so the member chosen is the one a login would get now")
	timeout := fs.Duration("timeout", 10*time.Second, "bound for the health checks and each route lookup")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: saslgate route --config FILE [--protocol P] USER\n\nPrints, for each protocol, where USER's logins go: the route source that answers, the pool\nand the member chosen, and how saslgate logs in there. Secrets are never printed.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("route: want one USER")
	}
	user := fs.Arg(0)
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if *protocol != "" && !cfg.uses(*protocol) {
		return fmt.Errorf("route: no listener serves protocol %q", *protocol)
	}
	router, err := newRouter(cfg, cfg.Log.logger(stderr), nil)
	if err != nil {
		return err
	}
	defer router.Close()
	if *health {
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		router.Pools().CheckOnce(cctx)
		cancel()
		for _, p := range router.Pools().All() {
			for _, m := range p.Members {
				if !m.Up() {
					fmt.Fprintf(stderr, "%s pool %s: member %s is down\n", p.Protocol, p.Name, m.Address())
				}
			}
		}
	}
	failed := 0
	for _, p := range protocols {
		if !cfg.uses(p.Name) || *protocol != "" && p.Name != *protocol {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		rt, err := router.Route(cctx, backends.Query{Protocol: p.Name, User: user, Mechanism: "OAUTHBEARER", Attempt: 1})
		cancel()
		if err != nil {
			failed++
			fmt.Fprintf(stdout, "%s %s: %v\n", p.Name, user, err)
			continue
		}
		fmt.Fprintln(stdout, describeRoute(p.Name, user, rt))
	}
	if failed > 0 {
		return fmt.Errorf("route: %d protocol(s) have no usable route for %s", failed, user)
	}
	return nil
}
