package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// LeaderTTL is the lifetime of a leadership session: how long the
// leadership outlives a manager that died without resigning (SIGKILL, power
// loss, partition). The session is renewed every LeaderTTL/3, so a live
// leader never loses it to a pause shorter than about two thirds of it.
//
// The failover time after a leader's death is at most LeaderTTL, plus, when
// the dead manager also hosted etcd's raft leader, one raft election (0.5 to
// 1 s with ElectionMs = 500) and the election timeout etcd adds to every
// lease when a new raft leader takes over (0.5 s), plus the winner's
// campaign round trip: 2 to 3.6 s in all (3.6 s measured by the e2e test
// TestHAManagers), inside the 5 s goal. It must stay above etcd's minimum
// lease TTL (1.5 election timeouts, 750 ms here); 1 s would save a second
// but make a live leader lose its lease to a 700 ms stall.
const LeaderTTL = 2 * time.Second

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

// LeaderID returns the id of the manager that holds the leadership now, or
// "" when none does.
func (s *Store) LeaderID(ctx context.Context) (string, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"leader/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("store: read election: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
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
