package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Txn is a batch of writes applied all together or not at all.
type Txn struct {
	s     *Store
	cmps  []clientv3.Cmp
	fails []error
	ops   []clientv3.Op
	after []func(rev int64)
	err   error
	size  int
}

// MaxTxnBytes is the most a caller should put in one transaction; the
// embedded member accepts requests of up to MaxRequestBytes.
const MaxTxnBytes = 1 << 20

// Size is the bytes of keys and values the batch writes so far.
func (t *Txn) Size() int { return t.size }

// Txn starts an empty batch.
func (s *Store) Txn() *Txn {
	t := &Txn{s: s}
	for _, c := range s.fence {
		t.cmps = append(t.cmps, c)
		t.fails = append(t.fails, ErrNotLeader)
	}
	return t
}

// Len is the number of writes in the batch.
func (t *Txn) Len() int { return len(t.ops) }

func (t *Txn) guard(c clientv3.Cmp, fail error, key string) {
	t.cmps = append(t.cmps, c)
	t.fails = append(t.fails, fmt.Errorf("%w: %s", fail, key))
}

// Commit applies the batch. If any guard fails nothing is written and the
// error wraps ErrConflict, ErrExists or ErrNotFound for the first failed
// guard.
func (t *Txn) Commit(ctx context.Context) error {
	if t.err != nil {
		return t.err
	}
	if len(t.ops) == 0 {
		return nil
	}
	resp, err := t.s.cli.Txn(ctx).If(t.cmps...).Then(t.ops...).Commit()
	if err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	if !resp.Succeeded {
		return t.whichFailed(ctx)
	}
	for _, f := range t.after {
		f(resp.Header.Revision)
	}
	return nil
}

// whichFailed finds the first guard that does not hold, for a precise error.
func (t *Txn) whichFailed(ctx context.Context) error {
	for i, c := range t.cmps {
		resp, err := t.s.cli.Txn(ctx).If(c).Commit()
		if err != nil {
			break
		}
		if !resp.Succeeded {
			return t.fails[i]
		}
	}
	return errors.Join(ErrConflict, errors.New("store: a guard failed"))
}

// TxnUnchangedSince guards t with the condition that no object of c was
// created or changed after revision rev (as returned by List): a check made
// on that list, such as that no other service publishes a port, still holds
// when t commits. A deletion does not fail the guard. If it fails, Commit
// returns an error wrapping ErrConflict.
func (c *Collection[T]) TxnUnchangedSince(t *Txn, rev int64) {
	t.guard(clientv3.Compare(clientv3.ModRevision(c.prefix), "<", rev+1).WithPrefix(), ErrConflict, c.prefix+"*")
}

// TxnDeletePrefix adds the removal of every object of c whose key starts
// with sub to t. It must not be combined in one Txn with a write to a key
// under the same prefix (etcd refuses overlapping operations).
func (c *Collection[T]) TxnDeletePrefix(t *Txn, sub string) {
	if sub == "" {
		t.err = fmt.Errorf("store: refusing to delete all of %s", c.prefix)
		return
	}
	t.ops = append(t.ops, clientv3.OpDelete(c.prefix+sub, clientv3.WithPrefix()))
}
