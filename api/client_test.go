package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "s3cret-token"

// recorded is one request as the fake server saw it.
type recorded struct {
	Method, Path, RawQuery, ContentType, Auth string
	Body                                      []byte
}

// fakeAPI is a TLS server that records requests and answers with respond.
type fakeAPI struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []recorded
}

func newFakeAPI(t *testing.T, respond http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.got = append(f.got, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), b})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		respond(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

func (f *fakeAPI) client(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Addr: f.srv.URL, Token: testToken, CACertPEM: f.caPEM()})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func (f *fakeAPI) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) == 0 {
		t.Fatal("the server saw no request")
	}
	return f.got[len(f.got)-1]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestClientCalls(t *testing.T) {
	t.Parallel()
	svc := Service{ID: "s1", Spec: ServiceSpec{Name: "hello"}, Version: 3}
	task := Task{ID: "t1", ServiceName: "hello", Slot: 1, DesiredState: TaskRunning, Status: TaskStatus{State: TaskRunning}}
	node := Node{ID: "n1", Hostname: "box", Status: NodeReady, Availability: AvailabilityActive}
	three := 3

	tests := []struct {
		name     string
		call     func(ctx context.Context, c *Client) (any, error)
		status   int
		respond  any // JSON body; nil writes none
		want     any
		wantReq  recorded // Method, Path, RawQuery, ContentType, Body (if set) are checked
		wantBody string   // if set, the request body must equal it
	}{
		{
			name:   "list services",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListServices(ctx) },
			status: 200, respond: []Service{svc}, want: []Service{svc},
			wantReq: recorded{Method: "GET", Path: "/api/v1/services", RawQuery: "limit=5000"},
		},
		{
			name:   "get service escapes the name",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetService(ctx, "a/b c") },
			status: 200, respond: svc, want: svc,
			wantReq: recorded{Method: "GET", Path: "/api/v1/services/a%2Fb%20c"},
		},
		{
			name: "deploy created",
			call: func(ctx context.Context, c *Client) (any, error) {
				s, created, err := c.DeployService(ctx, "hello", []byte("name: hello\n"), "application/yaml")
				return fmt.Sprint(s.Version, created), err
			},
			status: 201, respond: svc, want: "3 true",
			wantReq:  recorded{Method: "PUT", Path: "/api/v1/services/hello", ContentType: "application/yaml"},
			wantBody: "name: hello\n",
		},
		{
			name: "deploy updated",
			call: func(ctx context.Context, c *Client) (any, error) {
				s, created, err := c.DeployService(ctx, "hello", []byte(`{"name":"hello"}`), "application/json")
				return fmt.Sprint(s.Version, created), err
			},
			status: 200, respond: svc, want: "3 false",
			wantReq:  recorded{Method: "PUT", Path: "/api/v1/services/hello", ContentType: "application/json"},
			wantBody: `{"name":"hello"}`,
		},
		{
			name:   "scale",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ScaleService(ctx, "hello", 3) },
			status: 200, respond: Service{Spec: ServiceSpec{Name: "hello", Replicas: &three}}, want: Service{Spec: ServiceSpec{Name: "hello", Replicas: &three}},
			wantReq:  recorded{Method: "POST", Path: "/api/v1/services/hello/scale", ContentType: "application/json"},
			wantBody: `{"replicas":3}`,
		},
		{
			name:    "remove",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.RemoveService(ctx, "hello") },
			status:  204,
			wantReq: recorded{Method: "DELETE", Path: "/api/v1/services/hello"},
		},
		{
			name:   "service tasks",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ServiceTasks(ctx, "hello", false) },
			status: 200, respond: []Task{task}, want: []Task{task},
			wantReq: recorded{Method: "GET", Path: "/api/v1/services/hello/tasks", RawQuery: "limit=5000"},
		},
		{
			name:   "service tasks all",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ServiceTasks(ctx, "hello", true) },
			status: 200, respond: []Task{}, want: []Task{},
			wantReq: recorded{Method: "GET", Path: "/api/v1/services/hello/tasks", RawQuery: "all=true&limit=5000"},
		},
		{
			name:   "list tasks filtered",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListTasks(ctx, "hello", "n1") },
			status: 200, respond: []Task{task}, want: []Task{task},
			wantReq: recorded{Method: "GET", Path: "/api/v1/tasks", RawQuery: "limit=5000&node=n1&service=hello"},
		},
		{
			name:   "get task",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetTask(ctx, "t1") },
			status: 200, respond: task, want: task,
			wantReq: recorded{Method: "GET", Path: "/api/v1/tasks/t1"},
		},
		{
			name:   "list nodes",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.ListNodes(ctx) },
			status: 200, respond: []Node{node}, want: []Node{node},
			wantReq: recorded{Method: "GET", Path: "/api/v1/nodes"},
		},
		{
			name:   "get node",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.GetNode(ctx, "box") },
			status: 200, respond: node, want: node,
			wantReq: recorded{Method: "GET", Path: "/api/v1/nodes/box"},
		},
		{
			name:   "info",
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Info(ctx) },
			status: 200, respond: Info{Version: "0.1", Leader: true}, want: Info{Version: "0.1", Leader: true},
			wantReq: recorded{Method: "GET", Path: "/api/v1/info"},
		},
		{
			name: "register node",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RegisterNode(ctx, NodeRegistration{Hostname: "box", PortRange: [2]int{20000, 20100}})
			},
			status: 200, respond: node, want: node,
			wantReq:  recorded{Method: "POST", Path: "/api/v1/nodes/register", ContentType: "application/json"},
			wantBody: `{"hostname":"box","resources":{"cpus":0,"memory":"0B"},"port_range":[20000,20100]}`,
		},
		{
			name: "report status",
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.ReportStatus(ctx, "n1", StatusReport{Tasks: []TaskStatusUpdate{{ID: "t1", Status: TaskStatus{State: TaskRunning}}}})
			},
			status:  204,
			wantReq: recorded{Method: "POST", Path: "/api/v1/nodes/n1/status", ContentType: "application/json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.respond == nil {
					w.WriteHeader(tt.status)
					return
				}
				writeJSON(w, tt.status, tt.respond)
			})
			got, err := tt.call(context.Background(), f.client(t))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if tt.want != nil {
				// Compare through JSON: times and pointers compare by value.
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(tt.want)
				if !bytes.Equal(gj, wj) {
					t.Errorf("got %s\nwant %s", gj, wj)
				}
			}
			req := f.last(t)
			if req.Method != tt.wantReq.Method || req.Path != tt.wantReq.Path || req.RawQuery != tt.wantReq.RawQuery {
				t.Errorf("request %s %s?%s, want %s %s?%s", req.Method, req.Path, req.RawQuery, tt.wantReq.Method, tt.wantReq.Path, tt.wantReq.RawQuery)
			}
			if req.ContentType != tt.wantReq.ContentType {
				t.Errorf("Content-Type %q, want %q", req.ContentType, tt.wantReq.ContentType)
			}
			if req.Auth != "Bearer "+testToken {
				t.Errorf("Authorization %q, want the bearer token", req.Auth)
			}
			if tt.wantBody != "" && string(req.Body) != tt.wantBody {
				t.Errorf("request body %s, want %s", req.Body, tt.wantBody)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		respond http.HandlerFunc
		want    Error
	}{
		{
			name: "API error with a field",
			respond: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 400, Error{Code: CodeInvalid, Message: "is required for driver process", Field: "task.command"})
			},
			want: Error{Code: CodeInvalid, Message: "is required for driver process", Field: "task.command", Status: 400},
		},
		{
			name: "not found",
			respond: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 404, Error{Code: CodeNotFound, Message: `service "x" not found`})
			},
			want: Error{Code: CodeNotFound, Message: `service "x" not found`, Status: 404},
		},
		{
			name: "JSON error without a code",
			respond: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 409, map[string]string{"message": "changed concurrently"})
			},
			want: Error{Code: CodeConflict, Message: "changed concurrently", Status: 409},
		},
		{
			name: "non-JSON error body",
			respond: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(502)
				_, _ = io.WriteString(w, "\n  <html>bad gateway</html>\nsecond line\n")
			},
			want: Error{Code: CodeUnavailable, Message: "HTTP 502 Bad Gateway: <html>bad gateway</html>", Status: 502},
		},
		{
			name: "empty error body",
			respond: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(401)
			},
			want: Error{Code: CodeUnauthorized, Message: "HTTP 401 Unauthorized", Status: 401},
		},
		{
			name: "JSON that is not an error",
			respond: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 500, []int{1, 2})
			},
			want: Error{Code: CodeInternal, Message: "HTTP 500 Internal Server Error: [1,2]", Status: 500},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, tt.respond)
			_, err := f.client(t).GetService(context.Background(), "x")
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T), want *api.Error", err, err)
			}
			if *ae != tt.want {
				t.Errorf("got %#v\nwant %#v", *ae, tt.want)
			}
			if tt.want.Field != "" && FieldOf(err) != tt.want.Field {
				t.Errorf("FieldOf = %q, want %q", FieldOf(err), tt.want.Field)
			}
			if IsNotFound(err) != (tt.want.Code == CodeNotFound) {
				t.Errorf("IsNotFound = %v", IsNotFound(err))
			}
		})
	}
}

func TestClientBadSuccessBody(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "<html>not json</html>")
	})
	_, err := f.client(t).ListServices(context.Background())
	if !errors.Is(err, ErrResponse) {
		t.Fatalf("error %v, want ErrResponse", err)
	}
}

func TestClientResponseLimit(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		// A valid JSON array padded past the limit.
		_, _ = io.WriteString(w, "[")
		pad := bytes.Repeat([]byte(" "), 1<<20)
		for n := 0; n <= MaxResponseBytes; n += len(pad) {
			if _, err := w.Write(pad); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, "]")
	})
	_, err := f.client(t).ListServices(context.Background())
	if !errors.Is(err, ErrResponse) || !strings.Contains(err.Error(), "over") {
		t.Fatalf("error %v, want ErrResponse about the size", err)
	}
}

func TestClientTLS(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, Info{Version: "x"}) })

	// httptest servers share one certificate, so the wrong CA is a fresh
	// self-signed one made here.
	wrongCA := selfSignedPEM(t)
	c, err := NewClient(ClientConfig{Addr: f.srv.URL, CACertPEM: wrongCA})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Info(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with the wrong CA: error %v, want a certificate error", err)
	}
	var ae *Error
	if errors.As(err, &ae) {
		t.Errorf("a TLS failure must not look like an API error: %v", err)
	}

	// The right CA works.
	if info, err := f.client(t).Info(context.Background()); err != nil || info.Version != "x" {
		t.Errorf("with the right CA: %+v, %v", info, err)
	}
}

// selfSignedPEM returns a fresh self-signed CA certificate that no test
// server uses.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "wrong CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestNewClientConfig(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {})
	ca := f.caPEM()
	tests := []struct {
		name    string
		cfg     ClientConfig
		wantErr string // "" means valid
		base    string
	}{
		{"https with CA", ClientConfig{Addr: "https://127.0.0.1:7443", CACertPEM: ca}, "", "https://127.0.0.1:7443/api/v1"},
		{"trailing slash", ClientConfig{Addr: "https://127.0.0.1:7443/", CACertPEM: ca}, "", "https://127.0.0.1:7443/api/v1"},
		{"bare host:port is https", ClientConfig{Addr: "127.0.0.1:7443", CACertPEM: ca}, "", "https://127.0.0.1:7443/api/v1"},
		{"http to loopback", ClientConfig{Addr: "http://127.0.0.1:8080"}, "", "http://127.0.0.1:8080/api/v1"},
		{"http to localhost", ClientConfig{Addr: "http://localhost:8080"}, "", "http://localhost:8080/api/v1"},
		{"own HTTP client", ClientConfig{Addr: "https://x:1", HTTPClient: http.DefaultClient}, "", "https://x:1/api/v1"},
		{"empty", ClientConfig{}, "no address", ""},
		{"http elsewhere", ClientConfig{Addr: "http://10.0.0.1:8080"}, "loopback", ""},
		{"other scheme", ClientConfig{Addr: "ftp://127.0.0.1"}, "scheme", ""},
		{"https without CA", ClientConfig{Addr: "https://127.0.0.1:7443"}, "CA certificate", ""},
		{"garbage CA", ClientConfig{Addr: "https://127.0.0.1:7443", CACertPEM: []byte("nope")}, "no PEM", ""},
		{"CA and HTTP client", ClientConfig{Addr: "https://x:1", CACertPEM: ca, HTTPClient: http.DefaultClient}, "not both", ""},
		{"user info", ClientConfig{Addr: "https://u:p@x:1", CACertPEM: ca}, "scheme://host:port", ""},
		{"token with newline", ClientConfig{Addr: "https://x:1", CACertPEM: ca, Token: "a\nb"}, "line break", ""},
	}
	for _, tt := range tests {
		c, err := NewClient(tt.cfg)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if c.Addr() != tt.base {
				t.Errorf("%s: base %q, want %q", tt.name, c.Addr(), tt.base)
			}
			continue
		}
		if !errors.Is(err, ErrClientConfig) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want ErrClientConfig containing %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {})
	c := f.client(t)
	f.srv.Close()
	_, err := c.Info(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("error %v, want 'cannot reach'", err)
	}
}

func TestServiceLogs(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "line 1\nline 2\n")
	})
	c := f.client(t)
	for _, tc := range []struct {
		tail   int
		follow bool
		query  string
	}{{-1, false, ""}, {0, true, "follow=true&tail=0"}, {10, false, "tail=10"}} {
		rc, err := c.ServiceLogs(context.Background(), "hello", tc.tail, tc.follow)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || string(b) != "line 1\nline 2\n" {
			t.Errorf("logs %q, %v", b, err)
		}
		if got := f.last(t); got.Path != "/api/v1/services/hello/logs" || got.RawQuery != tc.query {
			t.Errorf("request %s?%s, want query %q", got.Path, got.RawQuery, tc.query)
		}
	}
}

func TestWatchAssignments(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/nodes/n1/assignments") {
			writeJSON(w, 404, Error{Code: CodeNotFound, Message: "no such node"})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl := w.(http.Flusher)
		enc := json.NewEncoder(w)
		_ = enc.Encode(Assignments{Revision: 1, Tasks: []Task{{ID: "t1"}}})
		fl.Flush()
		<-release                      // the client has seen the first message
		_, _ = io.WriteString(w, "\n") // blank lines are skipped
		_ = enc.Encode(Assignments{Revision: 2, Tasks: []Task{{ID: "t1"}, {ID: "t2"}}})
		fl.Flush()
		<-r.Context().Done() // hold the stream open until the client goes
	})
	c := f.client(t)

	if _, err := c.WatchAssignments(context.Background(), "nope"); !IsNotFound(err) {
		t.Fatalf("unknown node: error %v, want not_found", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := c.WatchAssignments(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	a := recvAssignments(t, ch)
	if a.Revision != 1 || len(a.Tasks) != 1 {
		t.Fatalf("first message %+v", a)
	}
	close(release)
	a = recvAssignments(t, ch)
	if a.Revision != 2 || len(a.Tasks) != 2 || a.Tasks[1].ID != "t2" {
		t.Fatalf("second message %+v", a)
	}
	cancel()
	waitClosed(t, ch)
}

func TestWatchAssignmentsEOFAndCoalescing(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		enc := json.NewEncoder(w)
		for rev := int64(1); rev <= 50; rev++ {
			_ = enc.Encode(Assignments{Revision: rev})
		}
		// Returning ends the stream: the channel must close.
	})
	ch, err := f.client(t).WatchAssignments(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the receiver's pace, it must see revisions in increasing
	// order, the last one last, and then a closed channel.
	var revs []int64
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case a, ok := <-ch:
			if !ok {
				done = true
				break
			}
			revs = append(revs, a.Revision)
		case <-timeout:
			t.Fatal("channel did not close after EOF")
		}
	}
	if len(revs) == 0 || revs[len(revs)-1] != 50 {
		t.Fatalf("revisions %v: want the last to be 50", revs)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Fatalf("revisions out of order: %v", revs)
		}
	}
}

func TestWatchAssignmentsBadLine(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"revision":1}`+"\n"+"not json\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ch, err := f.client(t).WatchAssignments(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch) // the first message may or may not be read first
}

func TestSendLatest(t *testing.T) {
	t.Parallel()
	ch := make(chan Assignments, 1)
	sendLatest(ch, Assignments{Revision: 1})
	sendLatest(ch, Assignments{Revision: 2}) // must not block
	if a := <-ch; a.Revision != 2 {
		t.Fatalf("got revision %d, want the newest, 2", a.Revision)
	}
	if len(ch) != 0 {
		t.Fatal("a stale message is left behind")
	}
}

func TestReadNDJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		max     int
		want    []string
		wantErr bool
	}{
		{"a\nb\n", 10, []string{"a", "b"}, false},
		{"a\n\n  \nb", 10, []string{"a", "b"}, false}, // last line without newline
		{"", 10, nil, false},
		{"short\n" + strings.Repeat("x", 20) + "\n", 10, []string{"short"}, true},
		{strings.Repeat("y", 100<<10) + "\n", 200 << 10, []string{strings.Repeat("y", 100<<10)}, false}, // longer than the reader's buffer
	}
	for i, tt := range tests {
		var got []string
		err := readNDJSON(strings.NewReader(tt.in), tt.max, func(b []byte) error {
			got = append(got, string(b))
			return nil
		})
		if (err != nil) != tt.wantErr {
			t.Errorf("%d: error %v, want error %v", i, err, tt.wantErr)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%d: lines %q, want %q", i, got, tt.want)
		}
	}
}

func TestNewTaskView(t *testing.T) {
	t.Parallel()
	code := 3
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	task := Task{
		ID: "t1", ServiceName: "web", Slot: 2, SpecVersion: 4, NodeID: "n1",
		Ports: map[string]int{"http": 20001}, DesiredState: TaskShutdown, CreatedAt: created,
		Status: TaskStatus{State: TaskFailed, Message: "exited", Err: "exit status 3", ExitCode: &code, PID: 42},
		Unit:   "core:1", Allocation: &CPUAllocation{CPUs: "1,3", MemNodes: "0"},
	}
	v := NewTaskView(task)
	got, _ := json.Marshal(v)
	want := `{"id":"t1","service":"web","slot":2,"node":"n1","state":"failed","desired_state":"shutdown","health":"none","ports":{"http":20001},"pid":42,"exit_code":3,"message":"exited","error":"exit status 3","created_at":"2025-01-02T03:04:05Z","spec_version":4,"unit":"core:1","cpus":"1,3","mem_nodes":"0"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// The view is a copy.
	task.Ports["http"] = 1
	*task.Status.ExitCode = 9
	if v.Ports["http"] != 20001 || *v.ExitCode != 3 {
		t.Error("the view shares memory with the task")
	}

	empty, _ := json.Marshal(NewTaskView(Task{ID: "t2", Status: TaskStatus{Health: HealthHealthy}}))
	if !strings.Contains(string(empty), `"ports":{}`) || !strings.Contains(string(empty), `"exit_code":null`) || !strings.Contains(string(empty), `"health":"healthy"`) {
		t.Errorf("empty task view %s", empty)
	}
}

func recvAssignments(t *testing.T, ch <-chan Assignments) Assignments {
	t.Helper()
	select {
	case a, ok := <-ch:
		if !ok {
			t.Fatal("channel closed early")
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no assignments within 10s")
	}
	return Assignments{}
}

func waitClosed(t *testing.T, ch <-chan Assignments) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed within 10s")
		}
	}
}
