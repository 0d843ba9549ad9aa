// Package gateway is the data plane of Berth's routing mesh: it listens on
// published TCP and UDP ports and on one shared HTTP and one HTTPS
// entrypoint, and proxies each connection or request to a healthy backend
// (a task's host:port) chosen by a load-balancing policy.
//
// The whole routing state is one Config, replaced atomically by
// Gateway.Update: a new config takes effect for the next connection or
// request, while connections and requests already proxied keep their backend
// (draining) until they end or Options.DrainTimeout passes. Per-backend
// counters (in-flight requests, passive-health ejections) and keep-alive
// connections live in a registry keyed by task id and address, so they
// survive reloads. When Update (or Drain) returns, no new request can reach
// a removed backend, and InFlight counts every request that still will.
//
// HTTP/1.x is served by the package's own loop (h1.go) with its own strict
// head parsers (package http1, fuzzed against net/http's) and a
// synchronous keep-alive client (backend.go); bodies are always re-framed,
// so framing tricks cannot pass through. HTTP/2 (h2 by ALPN, h2c by prior
// knowledge) is served by net/http behind a frame guard (h2guard.go, which
// makes it answer malformed requests and duplicate settings as RFC 9113
// says) and proxied through the same client. Request bodies are read under
// deadlines and a minimum rate on every route (bodyReader); a body that
// fails ends its exchange at once. The
// reason is cost: net/http's server plus httputil.ReverseProxy spent about
// 95 µs of CPU per proxied request on the benchmark machine, this path about
// 40 µs, which is what HAProxy spends.
//
// The package knows nothing of the cluster: it must not import the store, the
// scheduler, the orchestrator or the agent. The agent feeds it the healthy
// backends of each service; the gateway only adds passive health (a backend
// that refuses a connection is ejected for a growing cool-off) and never
// decides on its own that a task is healthy.
package gateway
