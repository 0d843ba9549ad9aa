package main

import "github.com/berth-project/berth/api"

// ANSI colours of states in tables. Each code is 5 bytes, and a coloured
// cell is always code + text + reset, so that every cell of a coloured
// column grows by the same 9 bytes and tabwriter still aligns the columns.
const (
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiRed    = "\x1b[31m"
	ansiGrey   = "\x1b[90m"
	ansiPlain  = "\x1b[39m"
	ansiReset  = "\x1b[0m"
)

// useColor reports whether tables on stdout get colours: on a terminal,
// unless NO_COLOR is set (https://no-color.org) or TERM is dumb;
// CLICOLOR_FORCE (not "0") forces them, for a pager that shows them.
func (e *env) useColor() bool {
	if e.getenv("NO_COLOR") != "" {
		return false
	}
	if f := e.getenv("CLICOLOR_FORCE"); f != "" && f != "0" {
		return true
	}
	return e.getenv("TERM") != "dumb" && isTerminal(e.stdout)
}

// stateColor is the colour of a task state, health, node status or
// availability value: green for what serves, yellow for what is on its way
// or held, red for what failed, grey for what ended as asked.
func stateColor(v string) string {
	switch v {
	case string(api.TaskRunning), api.HealthHealthy, api.NodeReady, api.AvailabilityActive, string(api.TaskComplete):
		return ansiGreen
	case string(api.TaskPending), string(api.TaskAssigned), string(api.TaskStarting),
		api.AvailabilityPause, api.AvailabilityDrain:
		return ansiYellow
	case string(api.TaskFailed), string(api.TaskRejected), api.HealthUnhealthy, api.NodeDown, "lost":
		return ansiRed
	case string(api.TaskShutdown):
		return ansiGrey
	}
	return ansiPlain
}

// colorColumns makes the named columns of t coloured by stateColor, if
// colour is on.
func (t *table) colorColumns(on bool, cols ...int) {
	if !on {
		return
	}
	t.colored = map[int]bool{}
	for _, c := range cols {
		t.colored[c] = true
	}
}
