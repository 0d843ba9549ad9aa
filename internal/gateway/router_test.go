package gateway

import (
	"net/url"
	"testing"
)

func TestRouterMatch(t *testing.T) {
	mk := func(service, host, path string) *route {
		h, p := host, normalizePath(path)
		return &route{key: h + " " + p, service: service, host: h, prefix: p}
	}
	rt := newRouter([]*route{
		mk("shop-root", "shop.example.test", "/"),
		mk("orders", "shop.example.test", "/orders"),
		mk("orders-api", "shop.example.test", "/orders/api/"),
		mk("wild", "*.example.test", "/"),
		mk("wild-admin", "*.example.test", "/admin"),
		mk("any-health", "", "/healthz"),
		mk("api-only", "api.example.test", "/v1"),
	})
	cases := []struct {
		host, path string
		want       string // service, "" for no route
	}{
		{"shop.example.test", "/", "shop-root"},
		{"shop.example.test", "/cart", "shop-root"},
		{"shop.example.test", "/orders", "orders"},
		{"shop.example.test", "/orders/", "orders"},
		{"shop.example.test", "/orders/42", "orders"},
		{"shop.example.test", "/ordersx", "shop-root"}, // whole segments only
		{"shop.example.test", "/orders/api", "orders-api"},
		{"shop.example.test", "/orders/api/x", "orders-api"},
		{"shop.example.test", "/admin", "shop-root"}, // exact host beats wildcard
		{"a.example.test", "/", "wild"},
		{"a.example.test", "/admin/users", "wild-admin"},
		{"a.b.example.test", "/", ""}, // a wildcard matches one label
		{"example.test", "/", ""},     // and not the bare domain
		{"other.test", "/healthz", "any-health"},
		{"other.test", "/", ""},
		{"api.example.test", "/v1/x", "api-only"},
		{"api.example.test", "/v2", "wild"}, // no path of the exact host: fall back to the wildcard
		{"api.example.test", "/healthz", "wild"},
	}
	for _, c := range cases {
		got := rt.match(c.host, c.path)
		name := ""
		if got != nil {
			name = got.service
		}
		if name != c.want {
			t.Errorf("match(%q, %q) = %q, want %q", c.host, c.path, name, c.want)
		}
	}
	if !rt.names("shop.example.test") || !rt.names("x.example.test") || rt.names("other.test") || rt.names("a.b.example.test") {
		t.Error("names() is wrong")
	}
}

func TestStripPrefix(t *testing.T) {
	cases := []struct{ prefix, in, want string }{
		{"/orders", "/orders", "/"},
		{"/orders", "/orders/", "/"},
		{"/orders", "/orders/42", "/42"},
		{"/a/b", "/a/b/c/d", "/c/d"},
		{"/", "/x", "/x"},
	}
	for _, c := range cases {
		u := &url.URL{Path: c.in}
		stripPrefix(u, c.prefix)
		if u.Path != c.want {
			t.Errorf("strip %q from %q = %q, want %q", c.prefix, c.in, u.Path, c.want)
		}
	}
	u, _ := url.Parse("/orders/a%2Fb")
	stripPrefix(u, "/orders")
	if u.Path != "/a/b" || u.EscapedPath() != "/a%2Fb" {
		t.Errorf("escaped path: Path %q EscapedPath %q", u.Path, u.EscapedPath())
	}
}

func TestHostOnly(t *testing.T) {
	cases := map[string]string{
		"Shop.Example.Test":      "shop.example.test",
		"shop.example.test:8080": "shop.example.test",
		"shop.example.test.":     "shop.example.test",
		"[::1]:80":               "::1",
		"[::1]":                  "::1",
		"127.0.0.1:9":            "127.0.0.1",
	}
	for in, want := range cases {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{"": "/", "/": "/", "//": "/", "/a/": "/a", "/a": "/a"} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}
