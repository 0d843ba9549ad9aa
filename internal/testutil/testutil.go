// Package testutil holds small helpers shared by Berth's tests. Only tests
// import it, and it imports nothing beyond the standard library, so any test
// may use it without pulling etcd or a Docker client into its binary.
//
// The suite runs in tiers (STYLE.md, "Tests in tiers"): unit tests on
// in-memory state, then tests that start an embedded etcd, create network
// namespaces, talk to a Docker Engine or build and run the berth binary.
// `go test -short ./...` runs only the first tier, so a developer's inner
// loop takes under a minute; `go test ./...` and .ci/run run every tier.
package testutil

import (
	"os"
	"testing"
)

// SkipIfShort skips the test when go test runs with -short. why names the
// tier the test belongs to ("embedded etcd", "Docker Engine", ...), so the
// skip message says what a run without -short would exercise.
//
// Call it first in a test or in the fixture every test of a tier calls,
// before anything expensive starts.
func SkipIfShort(tb testing.TB, why string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("-short: skips the %s tier", why)
	}
}

// RequireRoot skips the test unless it runs as root (cgroups, network
// namespaces, port 53 and switching users need it). why says what needs
// root, so a skipped run says what it did not check.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: " + why)
	}
}
