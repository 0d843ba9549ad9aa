// Package gateway is the data plane of Berth's routing mesh: it listens on
// published TCP and UDP ports and on one shared HTTP and one HTTPS
// entrypoint, and proxies each connection or request to a healthy backend
// (a task's host:port) chosen by a load-balancing policy.
//
// The whole routing state is one Config, replaced atomically by
// Gateway.Update: a new config takes effect for the next connection or
// request, while connections and requests already proxied keep their backend
// (draining) until they end or Options.DrainTimeout passes. Per-backend
// counters (in-flight requests, passive-health ejections) live in a registry
// keyed by task id and address, so they survive reloads.
//
// The package knows nothing of the cluster: it must not import the store, the
// scheduler, the orchestrator or the agent. The agent feeds it the healthy
// backends of each service; the gateway only adds passive health (a backend
// that refuses a connection is ejected for a growing cool-off) and never
// decides on its own that a task is healthy.
package gateway
