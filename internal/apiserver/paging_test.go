package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// putTasks stores n pending tasks of service svc (slots from 1) in batches.
func (f *fixture) putTasks(svc string, n int) {
	f.t.Helper()
	ctx := context.Background()
	for i := 0; i < n; {
		txn := f.st.Txn()
		for j := 0; j < 64 && i < n; j++ {
			i++
			t := api.Task{ID: fmt.Sprintf("%s-%05d", svc, i), ServiceID: svc + "-id", ServiceName: svc, Slot: i,
				DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskPending}, CreatedAt: time.Unix(int64(i), 0).UTC()}
			f.st.Tasks.TxnCreate(txn, &t)
		}
		if err := txn.Commit(ctx); err != nil {
			f.t.Fatal(err)
		}
	}
}

// pages reads every page of path with limit, returning the items' ids and the
// page sizes.
func (f *fixture) pages(path string, limit int) (ids []string, sizes []int) {
	f.t.Helper()
	tok := ""
	for range 10000 {
		u := fmt.Sprintf("%s?limit=%d", path, limit)
		if strings.Contains(path, "?") {
			u = fmt.Sprintf("%s&limit=%d", path, limit)
		}
		if tok != "" {
			u += "&continue=" + url.QueryEscape(tok)
		}
		resp, body := f.do("GET", u, "", testToken, nil)
		if resp.StatusCode != 200 {
			f.t.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
		}
		var items []struct {
			ID   string `json:"id"`
			Spec struct {
				Name string `json:"name"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(body, &items); err != nil {
			f.t.Fatalf("GET %s: %v", u, err)
		}
		for _, it := range items {
			if it.Spec.Name != "" {
				it.ID = it.Spec.Name // a service
			}
			ids = append(ids, it.ID)
		}
		sizes = append(sizes, len(items))
		if tok = resp.Header.Get(api.HeaderContinue); tok == "" {
			return ids, sizes
		}
	}
	f.t.Fatal("no last page")
	return
}

// TestListsPage: issue 12 item 6. GET /tasks with 100,000 tasks answered
// over 64 MiB, more than a client reads. Lists come in pages (limit,
// continue), bounded by default; the pages of one listing are read at one
// revision, so that writes meanwhile neither repeat nor drop an item; the
// body stays a JSON array.
func TestListsPage(t *testing.T) {
	f := newFixture(t)
	f.putTasks("a", api.DefaultPageSize+5)
	f.putTasks("b", 3)

	// No limit: a bounded default page, the total and a continuation.
	resp, body := f.do("GET", "/api/v1/tasks", "", testToken, nil)
	var first []api.Task
	if err := json.Unmarshal(body, &first); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /tasks: %d %v", resp.StatusCode, err)
	}
	if len(first) != api.DefaultPageSize || resp.Header.Get(api.HeaderContinue) == "" || resp.Header.Get(api.HeaderTotal) != fmt.Sprint(api.DefaultPageSize+8) {
		t.Fatalf("first page: %d items, continue %q, total %q", len(first), resp.Header.Get(api.HeaderContinue), resp.Header.Get(api.HeaderTotal))
	}

	// Pages of 400 are the one-page listing, in the same order, even with
	// tasks written between the pages.
	whole, _ := f.pages("/api/v1/tasks", api.MaxPageSize)
	if len(whole) != api.DefaultPageSize+8 {
		t.Fatalf("one page of %d: %d items", api.MaxPageSize, len(whole))
	}
	var got []string
	tok := ""
	for i := 0; ; i++ {
		u := "/api/v1/tasks?limit=400"
		if tok != "" {
			u += "&continue=" + url.QueryEscape(tok)
		}
		resp, body := f.do("GET", u, "", testToken, nil)
		var items []api.Task
		if err := json.Unmarshal(body, &items); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
		}
		for _, it := range items {
			got = append(got, it.ID)
		}
		if i == 0 {
			f.putTasks("c", 2) // after the first page: not in this listing
		}
		if tok = resp.Header.Get(api.HeaderContinue); tok == "" {
			break
		}
	}
	if strings.Join(got, ",") != strings.Join(whole, ",") {
		t.Errorf("paged listing differs from the one-page listing: %d vs %d items", len(got), len(whole))
	}

	// Filters page too; a service's tasks as well.
	if ids, sizes := f.pages("/api/v1/tasks?service=b", 2); len(ids) != 3 || fmt.Sprint(sizes) != "[2 1]" {
		t.Errorf("service=b in pages of 2: %v %v", ids, sizes)
	}
	resp, body = f.do("PUT", "/api/v1/services/b", "application/json", testToken, []byte(`{"name":"b","replicas":0,"task":{"command":["/bin/true"]}}`))
	if resp.StatusCode != 201 {
		t.Fatalf("create b: %d %s", resp.StatusCode, body)
	}
	var b api.Service
	_ = json.Unmarshal(body, &b)
	// The fixture's tasks name service b by a made-up id; the service's
	// task list matches by id, so none of them.
	if ids, _ := f.pages("/api/v1/services/b/tasks", 1); len(ids) != 0 {
		t.Errorf("services/b/tasks: %v", ids)
	}

	// Services page.
	for _, n := range []string{"s1", "s2", "s3"} {
		f.do("PUT", "/api/v1/services/"+n, "application/json", testToken, []byte(`{"name":"`+n+`","replicas":0,"task":{"command":["/bin/true"]}}`))
	}
	if names, sizes := f.pages("/api/v1/services", 2); strings.Join(names, ",") != "b,s1,s2,s3" || fmt.Sprint(sizes) != "[2 2]" {
		t.Errorf("services in pages of 2: %v %v", names, sizes)
	}

	// The Go client reads every page.
	c, err := api.NewClient(api.ClientConfig{Addr: f.srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.ListTasks(context.Background(), "", "")
	if err != nil || len(all) != api.DefaultPageSize+10 {
		t.Errorf("client ListTasks: %d tasks, %v", len(all), err)
	}
	pg, err := c.ListTasksPage(context.Background(), "a", "", api.PageOptions{Limit: 10})
	if err != nil || len(pg.Items) != 10 || pg.Continue == "" || pg.Total != api.DefaultPageSize+5 {
		t.Errorf("client ListTasksPage: %d items, continue %q, total %d, %v", len(pg.Items), pg.Continue, pg.Total, err)
	}
	svcs, err := c.ListServices(context.Background())
	if err != nil || len(svcs) != 4 {
		t.Errorf("client ListServices: %d, %v", len(svcs), err)
	}
}

// TestListPagingRejectsBadParameters: a bad limit or token is a 400 naming
// the parameter, and a token outlives neither its query nor compaction.
func TestListPagingRejectsBadParameters(t *testing.T) {
	f := newFixture(t)
	f.putTasks("a", 5)
	resp, _ := f.do("GET", "/api/v1/tasks?service=a&limit=2", "", testToken, nil)
	tok := resp.Header.Get(api.HeaderContinue)
	if tok == "" {
		t.Fatal("no continuation")
	}
	for _, c := range []struct{ name, path, field string }{
		{"limit 0", "/api/v1/tasks?limit=0", "limit"},
		{"limit over max", fmt.Sprintf("/api/v1/tasks?limit=%d", api.MaxPageSize+1), "limit"},
		{"limit not a number", "/api/v1/tasks?limit=ten", "limit"},
		{"garbage token", "/api/v1/tasks?continue=%25%25", "continue"},
		{"token of another query", "/api/v1/tasks?service=b&continue=" + url.QueryEscape(tok), "continue"},
		{"token of services", "/api/v1/services?continue=" + url.QueryEscape(tok), "continue"},
		{"future revision", "/api/v1/tasks?service=a&continue=" + url.QueryEscape(page{query: pageQuery(`tasks "a" "" false`)}.token(1<<40, 2)), "continue"},
	} {
		resp, body := f.do("GET", c.path, "", testToken, nil)
		var e api.Error
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != 400 || e.Field != c.field {
			t.Errorf("%s: %d %s, want 400 naming %s", c.name, resp.StatusCode, body, c.field)
		}
	}
	// The token works; after a compaction past its revision it has expired.
	if resp, body := f.do("GET", "/api/v1/tasks?service=a&limit=2&continue="+url.QueryEscape(tok), "", testToken, nil); resp.StatusCode != 200 {
		t.Fatalf("continuation: %d %s", resp.StatusCode, body)
	}
	f.putTasks("z", 1)
	cur, err := f.st.Client().Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Client().Compact(context.Background(), cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	resp, body := f.do("GET", "/api/v1/tasks?service=a&limit=2&continue="+url.QueryEscape(tok), "", testToken, nil)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "expired") {
		t.Errorf("compacted token: %d %s, want 400 expired", resp.StatusCode, body)
	}
}
