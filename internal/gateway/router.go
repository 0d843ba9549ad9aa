package gateway

import (
	"bytes"
	"net/url"
	"sort"
	"strings"
	"time"
)

// route is a compiled Route.
type route struct {
	key      string // host + " " + prefix: stable across configs, for retries
	service  string
	host     string // as written, lower case
	prefix   string // normalised: "/" or no trailing slash
	strip    bool
	timeout  time.Duration
	redirect bool
	hsts     bool
	pool     *pool
}

// router finds the route of a request by host, then path.
type router struct {
	exact map[string][]*route // by host
	wild  map[string][]*route // by the parent domain of "*.parent"
	any   []*route            // routes without a host
	byKey map[string]*route
}

func newRouter(routes []*route) *router {
	rt := &router{exact: map[string][]*route{}, wild: map[string][]*route{}, byKey: map[string]*route{}}
	for _, r := range routes {
		rt.byKey[r.key] = r
		switch {
		case r.host == "":
			rt.any = append(rt.any, r)
		case strings.HasPrefix(r.host, "*."):
			rt.wild[r.host[2:]] = append(rt.wild[r.host[2:]], r)
		default:
			rt.exact[r.host] = append(rt.exact[r.host], r)
		}
	}
	byLength := func(rs []*route) {
		sort.SliceStable(rs, func(i, j int) bool { return len(rs[i].prefix) > len(rs[j].prefix) })
	}
	for _, rs := range rt.exact {
		byLength(rs)
	}
	for _, rs := range rt.wild {
		byLength(rs)
	}
	byLength(rt.any)
	return rt
}

// match returns the route for host (lower case, no port) and path, or nil.
// An exact host is tried first, then the wildcard of its parent domain, then
// routes for any host; within each the longest matching prefix wins.
func (rt *router) match(host, path string) *route {
	return rt.matchBytes([]byte(host), []byte(path))
}

// matchBytes is match without allocating.
func (rt *router) matchBytes(host, path []byte) *route {
	if rs, ok := rt.exact[string(host)]; ok {
		if r := matchPath(rs, path); r != nil {
			return r
		}
	}
	if i := bytes.IndexByte(host, '.'); i > 0 {
		if rs, ok := rt.wild[string(host[i+1:])]; ok {
			if r := matchPath(rs, path); r != nil {
				return r
			}
		}
	}
	return matchPath(rt.any, path)
}

// names reports whether a route is written for host: an exact or wildcard
// host, not the any-host routes. Certificates are issued only for those.
func (rt *router) names(host string) bool {
	if _, ok := rt.exact[host]; ok {
		return true
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		_, ok := rt.wild[host[i+1:]]
		return ok
	}
	return false
}

func matchPath(rs []*route, path []byte) *route {
	for _, r := range rs {
		if prefixMatchBytes(r.prefix, path) {
			return r
		}
	}
	return nil
}

// prefixMatchBytes matches whole path segments.
func prefixMatchBytes(prefix string, path []byte) bool {
	if prefix == "/" {
		return true
	}
	return len(path) >= len(prefix) && string(path[:len(prefix)]) == prefix &&
		(len(path) == len(prefix) || path[len(prefix)] == '/')
}

// stripPrefix removes prefix (which matched u.Path) from u's path, leaving at
// least "/".
func stripPrefix(u *url.URL, prefix string) {
	if prefix == "/" {
		return
	}
	u.Path = trimSegment(u.Path, prefix)
	if u.RawPath != "" {
		if strings.HasPrefix(u.RawPath, prefix) {
			u.RawPath = trimSegment(u.RawPath, prefix)
		} else {
			u.RawPath = "" // the prefix was escaped; fall back to Path
		}
	}
}

func trimSegment(p, prefix string) string {
	p = p[len(prefix):]
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return p
}

// hostOnlyBytes is hostOnly on bytes; a lower-cased copy goes to *buf.
func hostOnlyBytes(h []byte, buf *[]byte) []byte {
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && bytes.IndexByte(h[i:], ']') < 0 {
		h = h[:i]
	}
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if n := len(h); n > 0 && h[n-1] == '.' {
		h = h[:n-1]
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			b := append((*buf)[:0], h...)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			*buf = b
			return b
		}
	}
	return h
}

// hostOnly returns the host of a Host header, lower case, without port or
// trailing dot.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}
