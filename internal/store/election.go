package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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

// ReleaseStale revokes leadership sessions left by an earlier run of the
// same manager (named id) that died without resigning — after kill -9, its
// lease would otherwise block the election until it expires.
func (s *Store) ReleaseStale(ctx context.Context, id string) error {
	resp, err := s.cli.Get(ctx, s.prefix+"leader/", clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("store: read election: %w", err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) == id && kv.Lease != 0 {
			if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
				return fmt.Errorf("store: revoke stale session: %w", err)
			}
		}
	}
	return nil
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
