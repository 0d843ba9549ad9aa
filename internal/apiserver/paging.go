package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// page is one request's place in a listing: how many items it may take, the
// store revision the listing is read at (0: now) and how many items earlier
// pages took. query fingerprints the request's filters, so that a token is
// not used with another query. See ADR 0030.
type page struct {
	limit  int
	rev    int64
	offset int
	query  string
}

// readPage reads the limit and continue parameters. query is the listing's
// identity (its path and filters).
func readPage(r *http.Request, query string) (page, error) {
	p := page{limit: api.DefaultPageSize, query: pageQuery(query)}
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > api.MaxPageSize {
			return p, invalid("limit", "want a number from 1 to %d, got %q", api.MaxPageSize, v)
		}
		p.limit = n
	}
	tok := q.Get("continue")
	if tok == "" {
		return p, nil
	}
	bad := invalid("continue", "not a continuation token of this listing: pass the %s header of the previous page as it is", api.HeaderContinue)
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return p, bad
	}
	parts := strings.Split(string(b), ":")
	if len(parts) != 4 || parts[0] != "1" || parts[3] != p.query {
		return p, bad
	}
	rev, err1 := strconv.ParseInt(parts[1], 10, 64)
	off, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || rev < 1 || off < 1 {
		return p, bad
	}
	p.rev, p.offset = rev, off
	return p, nil
}

// pageQuery fingerprints a listing's identity for its tokens.
func pageQuery(query string) string {
	h := fnv.New64a()
	h.Write([]byte(query))
	return strconv.FormatUint(h.Sum64(), 36)
}

// token is the continuation of p's listing read at rev after offset items.
func (p page) token(rev int64, offset int) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "1:%d:%d:%s", rev, offset, p.query))
}

// list reads a collection for p: at p's revision for a later page.
func list[T any](ctx context.Context, c *store.Collection[T], p page) ([]T, int64, error) {
	if p.rev == 0 {
		return c.List(ctx)
	}
	items, _, err := c.ListAt(ctx, p.rev)
	switch {
	case errors.Is(err, store.ErrCompacted):
		return nil, 0, invalid("continue", "the listing this token continues has expired: list again from the first page")
	case errors.Is(err, store.ErrFutureRevision):
		return nil, 0, invalid("continue", "not a continuation token of this listing")
	}
	return items, p.rev, err
}

// writePage writes the page of items (the whole listing, filtered and
// sorted, read at rev) that p asks for: at most p.limit items and about
// api.MaxPageBytes of JSON (at least one item). When items remain, the
// HeaderContinue header carries the token of the next page. HeaderTotal is
// the number of items in the whole listing.
func writePage[T any](w http.ResponseWriter, p page, rev int64, items []T) {
	if p.offset > len(items) {
		p.offset = len(items)
	}
	rest := items[p.offset:]
	n, size := 0, 0
	for n < len(rest) && n < p.limit {
		b, _ := json.Marshal(rest[n])
		if n > 0 && size+len(b) > api.MaxPageBytes {
			break
		}
		size += len(b)
		n++
	}
	w.Header().Set(api.HeaderTotal, strconv.Itoa(len(items)))
	if n < len(rest) {
		w.Header().Set(api.HeaderContinue, p.token(rev, p.offset+n))
	}
	writeJSON(w, 200, rest[:n])
}
