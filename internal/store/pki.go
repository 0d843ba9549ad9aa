package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClusterCARecord is the cluster CA every manager signs API, etcd and node
// certificates with. Its key is in the store so that any manager can sign;
// it never leaves the managers.
type ClusterCARecord struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// String names the record without its key, so that logging one never leaks
// the key.
func (ClusterCARecord) String() string { return "cluster CA" }

// JoinTokensRecord holds the cluster's current join tokens, one per role.
// The tokens are kept whole (not hashed) because `berth join-token` prints
// them again; the store holds the CA key too, so hashing them here would
// protect nothing a reader of the store could not mint anyway.
type JoinTokensRecord struct {
	Worker  string    `json:"worker"`
	Manager string    `json:"manager"`
	Updated time.Time `json:"updated"`
	// Revision is the record's mod revision, for SetJoinTokens.
	Revision int64 `json:"-"`
}

// String names the record without its tokens.
func (JoinTokensRecord) String() string { return "join tokens" }

// Keys under the prefix.
const (
	clusterCAKey  = "pki/ca"
	joinTokensKey = "cluster/tokens"
)

// Errors of the cluster records.
var (
	// ErrNoClusterCA is returned by ClusterCA when none is stored and
	// create is nil.
	ErrNoClusterCA = errors.New("store: no cluster CA")
	// ErrNoJoinTokens is returned by JoinTokens when none are stored and
	// create is nil.
	ErrNoJoinTokens = errors.New("store: no join tokens")
)

// ClusterCA returns the stored cluster CA. If there is none and create is
// not nil, it stores the one create makes (the first manager seeds it from
// the CA in its data directory) unless another manager stored one
// meanwhile: then that one is returned, so that every manager agrees.
func (s *Store) ClusterCA(ctx context.Context, create func() (ClusterCARecord, error)) (ClusterCARecord, error) {
	rec, _, err := getOrCreateJSON(ctx, s, clusterCAKey, create, ErrNoClusterCA)
	return rec, err
}

// JoinTokens returns the stored join tokens, storing the ones create makes
// if there are none (and create is not nil), as ClusterCA does.
func (s *Store) JoinTokens(ctx context.Context, create func() (JoinTokensRecord, error)) (JoinTokensRecord, error) {
	rec, rev, err := getOrCreateJSON(ctx, s, joinTokensKey, create, ErrNoJoinTokens)
	rec.Revision = rev
	return rec, err
}

// getOrCreateJSON is getOrCreate for a JSON record: the stored one, or the
// one create makes when there is none (and create is not nil; else missing),
// unless another manager stored one meanwhile: then that one, so that every
// manager agrees. It also returns the record's mod revision.
func getOrCreateJSON[T any](ctx context.Context, s *Store, name string, create func() (T, error), missing error) (T, int64, error) {
	var rec T
	var mk func() ([]byte, error)
	if create != nil {
		mk = func() ([]byte, error) {
			r, err := create()
			if err != nil {
				return nil, err
			}
			return encode(r)
		}
	}
	v, rev, err := s.getOrCreate(ctx, name, mk)
	if errors.Is(err, ErrNotFound) {
		return rec, 0, missing
	}
	if err != nil {
		return rec, 0, err
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, 0, fmt.Errorf("store: decode %s: %w", name, err)
	}
	return rec, rev, nil
}

// SetJoinTokens replaces the join tokens if they have not changed since
// rec.Revision was read (ErrConflict otherwise), and sets rec.Revision.
func (s *Store) SetJoinTokens(ctx context.Context, rec *JoinTokensRecord) error {
	key := s.prefix + joinTokensKey
	b, err := encode(rec)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", joinTokensKey, err)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rec.Revision)).
		Then(clientv3.OpPut(key, string(b))).
		Commit()
	if err != nil {
		return fmt.Errorf("store: put %s: %w", joinTokensKey, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s", ErrConflict, joinTokensKey)
	}
	rec.Revision = resp.Header.Revision
	return nil
}

// getOrCreate returns the value of key under the prefix and its mod
// revision. If there is none, it stores what create makes, unless the key
// was created meanwhile (then that value is returned); with a nil create
// it returns ErrNotFound.
func (s *Store) getOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, int64, error) {
	key := s.prefix + name
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("store: get %s: %w", name, err)
	}
	if len(resp.Kvs) > 0 {
		return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
	}
	if create == nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	v, err := create()
	if err != nil {
		return nil, 0, err
	}
	tresp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("store: create %s: %w", name, err)
	}
	if tresp.Succeeded {
		return v, tresp.Header.Revision, nil
	}
	kvs := tresp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, 0, fmt.Errorf("%w: %s created and deleted concurrently", ErrConflict, name)
	}
	return kvs[0].Value, kvs[0].ModRevision, nil
}

// adminTokenKey holds the admin token every manager accepts.
const adminTokenKey = "cluster/admin-token"

// AdminToken returns the cluster's admin token, storing local if there is
// none yet, so that every manager of a cluster — joined ones, and ones that
// share an external etcd without joining — accepts the same token. Like the
// CA key, it is kept whole: the store is reachable only with the cluster
// CA's certificates.
func (s *Store) AdminToken(ctx context.Context, local string) (string, error) {
	if local == "" {
		return "", errors.New("store: empty admin token")
	}
	v, _, err := s.getOrCreate(ctx, adminTokenKey, func() ([]byte, error) { return []byte(local), nil })
	if err != nil {
		return "", err
	}
	return string(v), nil
}
