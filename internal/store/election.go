package store

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leadership is held by one manager at a time. Done is closed when it is
// lost (session expired or resigned).
type Leadership struct {
	session  *concurrency.Session
	election *concurrency.Election
}

// Done is closed when the leadership is lost.
func (l *Leadership) Done() <-chan struct{} { return l.session.Done() }

// Resign gives the leadership up at once so another manager can take it.
func (l *Leadership) Resign(ctx context.Context) error {
	err := l.election.Resign(ctx)
	l.session.Close()
	return err
}

// Campaign blocks until this manager (named id) is the leader or ctx ends.
// ttl is how long the leadership outlives a manager that stopped
// renewing it.
func (s *Store) Campaign(ctx context.Context, id string, ttl time.Duration) (*Leadership, error) {
	secs := int(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("store: election session: %w", err)
	}
	e := concurrency.NewElection(sess, s.prefix+"leader")
	if err := e.Campaign(ctx, id); err != nil {
		sess.Close()
		return nil, fmt.Errorf("store: campaign: %w", err)
	}
	return &Leadership{session: sess, election: e}, nil
}
