package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-project/berth/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func serviceKey(s *api.Service) string { return s.Spec.Name }
func serviceRev(s *api.Service) *int64 { return &s.Revision }
func taskKey(t *api.Task) string       { return t.ID }
func taskRev(t *api.Task) *int64       { return &t.Revision }
func nodeKey(n *api.Node) string       { return n.ID }
func nodeRev(n *api.Node) *int64       { return &n.Revision }

// Collection is typed access to one kind of object stored as JSON under one
// key prefix. Every write is guarded by the object's mod revision.
type Collection[T any] struct {
	s      *Store
	prefix string
	key    func(*T) string
	rev    func(*T) *int64
}

func newCollection[T any](s *Store, name string, key func(*T) string, rev func(*T) *int64) *Collection[T] {
	return &Collection[T]{s: s, prefix: s.prefix + name, key: key, rev: rev}
}

// cli is the etcd client the collection's own operations use.
func (c *Collection[T]) cli() *clientv3.Client { return c.s.cli }

// txn starts a batch for one of the collection's own operations.
func (c *Collection[T]) txn() *Txn { return c.s.Txn() }

func (c *Collection[T]) k(key string) string { return c.prefix + key }

// encode writes obj as JSON without HTML escaping, which would make a spec
// full of '<' six times its size.
func encode(obj any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func (c *Collection[T]) decode(kv []byte, modRev int64) (T, error) {
	var obj T
	if err := json.Unmarshal(kv, &obj); err != nil {
		return obj, fmt.Errorf("store: decode %s: %w", c.prefix, err)
	}
	*c.rev(&obj) = modRev
	return obj, nil
}

// Get returns the object stored under key, or ErrNotFound.
func (c *Collection[T]) Get(ctx context.Context, key string) (T, error) {
	var zero T
	resp, err := c.cli().Get(ctx, c.k(key))
	if err != nil {
		return zero, fmt.Errorf("store: get %s%s: %w", c.prefix, key, err)
	}
	if len(resp.Kvs) == 0 {
		return zero, fmt.Errorf("%w: %s%s", ErrNotFound, strings.TrimPrefix(c.prefix, c.s.prefix), key)
	}
	return c.decode(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// List returns every object and the store revision it was read at; watch
// from that revision to miss nothing.
func (c *Collection[T]) List(ctx context.Context) ([]T, int64, error) {
	return c.ListPrefix(ctx, "")
}

// ListPrefix is List of the objects whose key starts with sub, in key order.
func (c *Collection[T]) ListPrefix(ctx context.Context, sub string) ([]T, int64, error) {
	return c.list(ctx, sub)
}

// ListAt is List as the store was at revision rev (as List returned it), so
// that the pages of one listing come from one state. A revision already
// compacted away (the store keeps about five minutes) gives ErrCompacted;
// one not reached yet, an error.
func (c *Collection[T]) ListAt(ctx context.Context, rev int64) ([]T, int64, error) {
	return c.list(ctx, "", clientv3.WithRev(rev))
}

func (c *Collection[T]) list(ctx context.Context, sub string, opts ...clientv3.OpOption) ([]T, int64, error) {
	resp, err := c.cli().Get(ctx, c.prefix+sub, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, 0, fmt.Errorf("%w: list %s", ErrCompacted, c.prefix)
	}
	if errors.Is(err, rpctypes.ErrFutureRev) {
		return nil, 0, fmt.Errorf("%w: list %s", ErrFutureRevision, c.prefix)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: list %s: %w", c.prefix, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		obj, err := c.decode(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, obj)
	}
	return out, resp.Header.Revision, nil
}

// Create stores a new object; ErrExists if its key is taken. On success the
// object's revision is set.
func (c *Collection[T]) Create(ctx context.Context, obj *T) error {
	t := c.txn()
	c.TxnCreate(t, obj)
	return t.Commit(ctx)
}

// Update replaces an object if it is unchanged since it was read (its
// revision); ErrConflict otherwise, ErrNotFound if it was deleted.
func (c *Collection[T]) Update(ctx context.Context, obj *T) error {
	t := c.txn()
	c.TxnUpdate(t, obj)
	return t.Commit(ctx)
}

// Delete removes key if its revision is rev (any revision when rev is 0).
func (c *Collection[T]) Delete(ctx context.Context, key string, rev int64) error {
	t := c.txn()
	c.TxnDelete(t, key, rev)
	return t.Commit(ctx)
}

// TxnCreate adds the creation of obj to t.
func (c *Collection[T]) TxnCreate(t *Txn, obj *T) {
	key := c.k(c.key(obj))
	b, err := encode(obj)
	if err != nil {
		t.err = fmt.Errorf("store: encode %s: %w", key, err)
		return
	}
	t.guard(clientv3.Compare(clientv3.CreateRevision(key), "=", 0), ErrExists, key)
	t.ops = append(t.ops, clientv3.OpPut(key, string(b)))
	t.size += len(key) + len(b)
	t.after = append(t.after, func(rev int64) { *c.rev(obj) = rev })
}

// TxnUpdate adds the replacement of obj, guarded by its revision, to t.
func (c *Collection[T]) TxnUpdate(t *Txn, obj *T) {
	key := c.k(c.key(obj))
	rev := *c.rev(obj)
	b, err := encode(obj)
	if err != nil {
		t.err = fmt.Errorf("store: encode %s: %w", key, err)
		return
	}
	if rev == 0 {
		t.err = fmt.Errorf("store: update %s without a revision", key)
		return
	}
	t.guard(clientv3.Compare(clientv3.ModRevision(key), "=", rev), ErrConflict, key)
	t.ops = append(t.ops, clientv3.OpPut(key, string(b)))
	t.size += len(key) + len(b)
	t.after = append(t.after, func(rev int64) { *c.rev(obj) = rev })
}

// TxnPut adds an unconditional write of obj to t.
func (c *Collection[T]) TxnPut(t *Txn, obj *T) {
	key := c.k(c.key(obj))
	b, err := encode(obj)
	if err != nil {
		t.err = fmt.Errorf("store: encode %s: %w", key, err)
		return
	}
	t.ops = append(t.ops, clientv3.OpPut(key, string(b)))
	t.size += len(key) + len(b)
	t.after = append(t.after, func(rev int64) { *c.rev(obj) = rev })
}

// TxnDelete adds the removal of key (guarded by rev unless it is 0) to t.
func (c *Collection[T]) TxnDelete(t *Txn, key string, rev int64) {
	k := c.k(key)
	if rev != 0 {
		t.guard(clientv3.Compare(clientv3.ModRevision(k), "=", rev), ErrConflict, k)
	} else {
		t.guard(clientv3.Compare(clientv3.CreateRevision(k), ">", 0), ErrNotFound, k)
	}
	t.ops = append(t.ops, clientv3.OpDelete(k))
}

// EventType says what happened to an object.
type EventType int

// Event types.
const (
	Put EventType = iota
	Deleted
)

// Event is one change seen by a watch. Object is the new value for Put and
// the last value for Deleted. Err is set on the last event of a broken
// watch (ErrCompacted means: list again).
type Event[T any] struct {
	Type     EventType
	Key      string
	Object   T
	Revision int64
	Err      error
}

// Watch streams every change after revision fromRev (as returned by List)
// until ctx ends. The channel is closed when the watch ends; if it ended by
// error, the last event carries it.
func (c *Collection[T]) Watch(ctx context.Context, fromRev int64) <-chan Event[T] {
	out := make(chan Event[T], 256)
	go func() {
		defer close(out)
		wctx := clientv3.WithRequireLeader(ctx)
		wc := c.s.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(fromRev+1), clientv3.WithPrevKV())
		send := func(ev Event[T]) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for resp := range wc {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 {
					err = fmt.Errorf("%w (at %d)", ErrCompacted, resp.CompactRevision)
				}
				send(Event[T]{Err: err})
				return
			}
			for _, e := range resp.Events {
				ev := Event[T]{Key: strings.TrimPrefix(string(e.Kv.Key), c.prefix), Revision: e.Kv.ModRevision}
				var err error
				if e.Type == clientv3.EventTypeDelete {
					ev.Type = Deleted
					if e.PrevKv != nil {
						ev.Object, err = c.decode(e.PrevKv.Value, e.PrevKv.ModRevision)
					}
				} else {
					ev.Object, err = c.decode(e.Kv.Value, e.Kv.ModRevision)
				}
				if err != nil {
					continue // a foreign or corrupt value: skip it, do not stop the watch
				}
				if !send(ev) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(Event[T]{Err: fmt.Errorf("store: watch %s ended", c.prefix)})
		}
	}()
	return out
}
