package apiserver

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/berth-project/berth/internal/controller"
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
