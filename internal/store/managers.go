package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ManagerRecord says where one live manager serves. It is bound to a lease
// of that manager: it disappears ManagerTTL after the manager dies.
type ManagerRecord struct {
	// ID is the manager's stable id (its data dir's manager-id).
	ID string `json:"id"`
	// MemberName is the name of its embedded etcd member ("" with an
	// external etcd).
	MemberName string `json:"member_name,omitempty"`
	// MemberID is its etcd member id (0 with an external etcd).
	MemberID uint64 `json:"member_id,omitempty"`
	// APIURL is the base URL of its API, such as https://10.0.0.1:7443.
	APIURL string `json:"api_url"`
	// PeerURL is its etcd member's peer URL.
	PeerURL string `json:"peer_url,omitempty"`
	// Started is when this manager process started.
	Started time.Time `json:"started"`
}

// ManagerTTL is how long a dead manager's record outlives it.
const ManagerTTL = 5 * time.Second

// managersKey is where the records are kept, under the prefix.
const managersKey = "managers/"

// KeepManagerRecord writes rec under managers/<id>, bound to a lease that
// this process keeps alive, and writes it again whenever the lease is lost
// (an etcd partition longer than ttl). It returns when ctx ends; the
// record is then revoked at once.
func (s *Store) KeepManagerRecord(ctx context.Context, rec ManagerRecord, ttl time.Duration) error {
	secs := max(int(ttl/time.Second), 1)
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode manager record: %w", err)
	}
	key := s.prefix + managersKey + rec.ID
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
		if err == nil {
			_, err = s.cli.Put(ctx, key, string(b), clientv3.WithLease(sess.Lease()))
			if err == nil {
				select {
				case <-sess.Done():
				case <-ctx.Done():
				}
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = s.cli.Revoke(rctx, sess.Lease())
			cancel()
			sess.Close()
		}
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			s.log.Warn("could not write this manager's record; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// ManagerRecords lists the records of the live managers, by id.
func (s *Store) ManagerRecords(ctx context.Context) ([]ManagerRecord, error) {
	resp, err := s.cli.Get(ctx, s.prefix+managersKey, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("store: list managers: %w", err)
	}
	out := make([]ManagerRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r ManagerRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			s.log.Warn("skipping an unreadable manager record", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// DeleteManagerRecord deletes the record of manager id at once (after its
// removal), rather than when its lease expires.
func (s *Store) DeleteManagerRecord(ctx context.Context, id string) error {
	if _, err := s.cli.Delete(ctx, s.prefix+managersKey+id); err != nil {
		return fmt.Errorf("store: delete manager record %s: %w", id, err)
	}
	return nil
}
