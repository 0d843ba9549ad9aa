package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/berth-project/berth/internal/controller"
	"github.com/berth-project/berth/internal/store"
)

// ndjsonKeepalive is how often an idle stream sends an empty line, so that
// proxies and the client notice a dead connection.
const ndjsonKeepalive = 15 * time.Second

// ndjson is an open NDJSON stream to an agent (assignments, endpoints,
// certificates): one JSON value per line, flushed as it is written.
type ndjson struct {
	w   http.ResponseWriter
	f   http.Flusher
	enc *json.Encoder
	// Keepalive ticks when an empty line is due; Stop it when done.
	Keepalive *time.Ticker
}

// startNDJSON answers 200 with the stream's headers.
func startNDJSON(w http.ResponseWriter) (*ndjson, error) {
	f, ok := w.(http.Flusher)
	if !ok {
		return nil, errors.New("apiserver: streaming unsupported")
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(200)
	return &ndjson{w: w, f: f, enc: json.NewEncoder(w), Keepalive: time.NewTicker(ndjsonKeepalive)}, nil
}

// send writes v as one line and flushes it.
func (n *ndjson) send(v any) error {
	if err := n.enc.Encode(v); err != nil {
		return err
	}
	n.f.Flush()
	return nil
}

// ping writes the keep-alive empty line.
func (n *ndjson) ping() error {
	if _, err := n.w.Write([]byte("\n")); err != nil {
		return err
	}
	n.f.Flush()
	return nil
}

// debouncer batches a stream's changes the way controller.Loop batches
// reconciles: the first change after a quiet spell goes out at once, later
// ones within AssignmentDebounce of a send are batched into the next.
func (s *Server) debouncer() controller.Debouncer {
	return controller.Debouncer{Window: s.cfg.AssignmentDebounce}
}

// A change applies one watch event to a stream's state, in the stream's
// goroutine, and reports whether the stream has something new to send. A
// nil change means a watch failed: the stream lists again.
type change func() bool

// forward feeds in's events to changes, each applied by apply, until ctx
// ends; a failed or ended watch is passed on as a nil change. It lets one
// follow loop serve watches of several types.
func forward[T any](ctx context.Context, changes chan<- change, in <-chan store.Event[T], apply func(store.Event[T]) bool) {
	go func() {
		for {
			var c change
			if ev, ok := <-in; ok && ev.Err == nil {
				c = func() bool { return apply(ev) }
			}
			select {
			case changes <- c:
			case <-ctx.Done():
				return
			}
			if c == nil {
				return
			}
		}
	}()
}

// mirror applies a watch event to a map of objects by key: a put stores
// the object, a delete removes it. It reports a change, for forward.
func mirror[T any](m map[string]T, ev store.Event[T]) bool {
	if ev.Type == store.Put {
		m[ev.Key] = ev.Object
	} else {
		delete(m, ev.Key)
	}
	return true
}

// follow serves an NDJSON stream of a state kept from store watches (the
// list → watch → debounce loop of the assignments, endpoints and
// certificates streams): list reads the state at a revision, starts its
// watches from there with forward (they end with the ctx it is given) and
// returns the function that makes the message for the current state (nil:
// nothing to send). follow sends it at once, then again after changes,
// debounced like controller.Loop, and lists again when a watch fails, until
// the client goes away.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, list func(ctx context.Context, changes chan<- change) (message func() any, err error)) error {
	stream, err := startNDJSON(w)
	if err != nil {
		return err
	}
	defer stream.Keepalive.Stop()
	ctx := r.Context()
	for {
		wctx, cancel := context.WithCancel(ctx)
		changes := make(chan change)
		again := false
		message, err := list(wctx, changes)
		send := func() error {
			if m := message(); m != nil {
				return stream.send(m)
			}
			return nil
		}
		if err == nil && send() == nil {
			again = s.followChanges(ctx, stream, changes, send)
		}
		cancel()
		if !again {
			return nil // the stream is open; the agent reconnects
		}
	}
}

// followChanges sends the state after changes until ctx ends or a write
// fails (false) or a watch fails (true: list again).
func (s *Server) followChanges(ctx context.Context, stream *ndjson, changes <-chan change, send func() error) bool {
	// The first change after a quiet spell goes out at once; changes
	// within AssignmentDebounce of a send are batched into the next.
	d := s.debouncer()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-stream.Keepalive.C:
			if err := stream.ping(); err != nil {
				return false
			}
		case apply := <-changes:
			if apply == nil {
				return true
			}
			if apply() {
				d.Changed()
			}
		case <-d.C():
			if err := send(); err != nil {
				return false
			}
			d.Fired()
		}
	}
}
