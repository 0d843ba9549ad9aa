// Package e2e holds Berth's end-to-end tests: each test builds nothing
// itself but runs the berth binary that TestMain builds once, as a real
// `berth up` process with its own data directory, API port and cgroup
// parent, and drives it through the CLI and the api Go client.
//
// The package has no non-test code and must not be imported. Its tests must
// only ever signal processes they started or recorded (checked by pid and
// start time), and must leave no process, cgroup or temporary directory
// behind.
package e2e
