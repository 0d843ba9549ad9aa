// Package topology knows the CPU layout of a node: it discovers sockets,
// NUMA nodes, last-level-cache groups, cores and their SMT threads from
// sysfs (pure Go, no cgo), does CPU-set arithmetic in the kernel's list
// format, splits a node into units for per-unit services, allocates
// exclusive CPUs with topology preferences, and draws a node's topology as
// text.
//
// Everything but Discover and DiscoverFS is a pure function of its
// arguments, so the scheduler can call it inside its plan. The package must
// not import the store, the API server or any other Berth package but api,
// and must do no I/O outside Discover and DiscoverFS.
package topology
