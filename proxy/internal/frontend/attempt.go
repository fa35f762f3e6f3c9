package frontend

import (
	"context"
	"time"

	"github.com/saslgate/saslgate/backends"
	"github.com/saslgate/saslgate/proxy"
	"github.com/saslgate/saslgate/proxy/sasl"
)

// Attempt is one authentication attempt of the login pipeline, bounded by the
// pre-authentication deadline, and the backend session its login opened: S is package
// backends' *IMAPSession, *POP3Session or *SieveSession.
type Attempt[S any] struct {
	proxy.Attempt
	Session S

	login  *proxy.Login
	ctx    context.Context
	cancel context.CancelFunc
}

// Begin starts attempt a after the failed-authentication delay; a delay that outlasts the
// pre-authentication deadline, or a shutdown during it (done), ends the connection
// unanswered. dial logs in to the backend for the login pipeline.
func Begin[S any](login *proxy.Login, a proxy.Attempt, deadline time.Time, done <-chan struct{},
	dial func(ctx context.Context, r backends.Route, secret backends.Secret, client backends.Client) (S, error)) (*Attempt[S], error) {
	at := &Attempt[S]{Attempt: a, login: login}
	at.Dial = func(ctx context.Context, r backends.Route, secret backends.Secret) (err error) {
		at.Session, err = dial(ctx, r, secret, at.Client)
		return err
	}
	if err := login.Wait(&at.Attempt, deadline, done); err != nil {
		login.Finish(&at.Attempt, err)
		return nil, err
	}
	// The preauth deadline also bounds the IdP and backend work for this login.
	at.ctx, at.cancel = context.WithDeadline(context.Background(), deadline)
	return at, nil
}

// Auth is the mechanisms' proxy/sasl Authenticator: the login pipeline.
func (a *Attempt[S]) Auth(creds sasl.Credentials) error {
	return a.login.Run(a.ctx, &a.Attempt, creds)
}

// Cancel releases the login's context, its deadline timer and what it held for the IdP and
// backend calls, which would otherwise live as long as a spliced session.
func (a *Attempt[S]) Cancel() { a.cancel() }
