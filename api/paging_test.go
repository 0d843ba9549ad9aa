package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestListsReadEveryPage: the client's list calls (what the CLI's listings
// and `-o json` use) follow Berth-Continue until the last page, keeping the
// filters on every request.
func TestListsReadEveryPage(t *testing.T) {
	var tasks []Task
	for i := range 7 {
		tasks = append(tasks, Task{ID: "t" + strconv.Itoa(i), ServiceName: "web"})
	}
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		queries = append(queries, r.URL.RawQuery)
		if q.Get("service") != "web" || q.Get("limit") != strconv.Itoa(MaxPageSize) {
			http.Error(w, "lost the filter or the limit", 400)
			return
		}
		off, _ := strconv.Atoi(q.Get("continue"))
		end := min(off+3, len(tasks)) // the server's page may be smaller than the limit
		if end < len(tasks) {
			w.Header().Set(HeaderContinue, strconv.Itoa(end))
		}
		w.Header().Set(HeaderTotal, strconv.Itoa(len(tasks)))
		_ = json.NewEncoder(w).Encode(tasks[off:end])
	}))
	defer srv.Close()
	c, err := NewClient(ClientConfig{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ListTasks(context.Background(), "web", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(tasks) || got[0].ID != "t0" || got[6].ID != "t6" {
		t.Errorf("got %d tasks: %+v", len(got), got)
	}
	if len(queries) != 3 {
		t.Errorf("%d requests, want 3: %v", len(queries), queries)
	}
}
