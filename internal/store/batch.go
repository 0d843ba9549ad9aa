package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxBatch is how many writes a bulk write (UpdateMany, DeleteMany) puts in
// one transaction. Small batches keep each raft entry and each apply short,
// so that a heartbeat or a status write proposed meanwhile waits for one
// batch, not for the whole bulk write (issue 12: a scale-up of 1,000 tasks
// made nodes miss heartbeats).
const MaxBatch = 64

// GetMany reads the objects stored under keys in one round trip (a
// transaction of reads, at one revision), in batches of at most 512 keys.
// Keys that hold nothing are absent from the result.
func (c *Collection[T]) GetMany(ctx context.Context, keys []string) (map[string]T, error) {
	out := make(map[string]T, len(keys))
	const per = 512
	for i := 0; i < len(keys); i += per {
		chunk := keys[i:min(i+per, len(keys))]
		ops := make([]clientv3.Op, len(chunk))
		for j, k := range chunk {
			ops[j] = clientv3.OpGet(c.k(k))
		}
		resp, err := c.cli().Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("store: get %d of %s: %w", len(chunk), c.prefix, err)
		}
		for j, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				continue
			}
			obj, err := c.decode(kvs[0].Value, kvs[0].ModRevision)
			if err != nil {
				return nil, err
			}
			out[chunk[j]] = obj
		}
	}
	return out, nil
}

// UpdateMany writes objs, each guarded by its revision, in transactions of at
// most MaxBatch writes and MaxTxnBytes. A transaction whose guard fails is
// written again one object at a time, so that the others land. It returns,
// for each object, whether it was written (its revision is then set); an
// object that changed or went meanwhile is simply not written. The error is
// for anything else, and stops the writes.
func (c *Collection[T]) UpdateMany(ctx context.Context, objs []T) ([]bool, error) {
	return c.many(ctx, len(objs), func(t *Txn, i int) { c.TxnUpdate(t, &objs[i]) })
}

// DeleteMany removes keys[i] if its revision is still revs[i], in batches as
// UpdateMany writes; it returns which were removed.
func (c *Collection[T]) DeleteMany(ctx context.Context, keys []string, revs []int64) ([]bool, error) {
	return c.many(ctx, len(keys), func(t *Txn, i int) { c.TxnDelete(t, keys[i], revs[i]) })
}

func (c *Collection[T]) many(ctx context.Context, n int, add func(t *Txn, i int)) ([]bool, error) {
	done := make([]bool, n)
	for i := 0; i < n; {
		txn := c.txn()
		j := i
		for j < n && j-i < MaxBatch && (j == i || txn.Size() < MaxTxnBytes) {
			add(txn, j)
			j++
		}
		err := txn.Commit(ctx)
		switch {
		case err == nil:
			for k := i; k < j; k++ {
				done[k] = true
			}
		case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
			for k := i; k < j; k++ {
				one := c.txn()
				add(one, k)
				err := one.Commit(ctx)
				switch {
				case err == nil:
					done[k] = true
				case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
				default:
					return done, err
				}
			}
		default:
			return done, err
		}
		i = j
	}
	return done, nil
}
