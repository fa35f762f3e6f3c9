package main

import (
	"slices"

	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/imap"
	"github.com/saslgate/saslgate/proxy/pop3"
	"github.com/saslgate/saslgate/proxy/sieve"
	"github.com/saslgate/saslgate/proxy/smtp"
)

// protocols is the protocol registry (DESIGN.md, "Layout"): the front ends this program
// serves, in the order they are listed wherever protocols are listed. Listener protocols,
// the configuration's protocol sections, token scope keys, serving, reloading, readiness
// and discovery all come from it, so a new front end is its package and one entry here.
var protocols = []proxy.Protocol{imap.Protocol, pop3.Protocol, smtp.Protocol, sieve.Protocol}

// protocolNames are the registered protocols' names.
func protocolNames() []string {
	names := make([]string, len(protocols))
	for i, p := range protocols {
		names[i] = p.Name
	}
	return names
}

// lookupProtocol returns the registered protocol called name.
func lookupProtocol(name string) (proxy.Protocol, bool) {
	i := slices.IndexFunc(protocols, func(p proxy.Protocol) bool { return p.Name == name })
	if i < 0 {
		return proxy.Protocol{}, false
	}
	return protocols[i], true
}
