package controller

import "time"

// Debouncer batches bursts of changes for a loop that follows store
// watches (controller.Loop and the API's NDJSON streams): the first change
// after a quiet spell is handled at once, and changes that follow within
// Window of the last handling are batched into one, handled when the window
// ends. It is used from one goroutine, in a select:
//
//	case ev := <-watch:
//		apply(ev)
//		d.Changed()
//	case <-d.C():
//		handle()
//		d.Fired()
//
// The zero value (with Window set) treats the time before the first Fired
// as quiet.
type Debouncer struct {
	// Window is how long after a handling further changes are batched.
	Window time.Duration

	last  time.Time
	dirty bool
	c     <-chan time.Time
}

// Changed records a change. The first since the last handling arms C: at
// once after a quiet spell, else when Window since that handling ends.
func (d *Debouncer) Changed() {
	if !d.dirty {
		d.dirty = true
		d.c = time.After(max(d.Window-time.Since(d.last), 0))
	}
}

// C delivers when the recorded changes are due; it is nil (blocks forever
// in a select) while nothing is pending.
func (d *Debouncer) C() <-chan time.Time { return d.c }

// Fired records a handling just done: nothing is pending, and changes
// within Window of now are batched. Call it after handling what C
// announced, or after handling the state some other way (such as the first
// full handling after a list) that should open a window too.
func (d *Debouncer) Fired() {
	d.dirty, d.c = false, nil
	d.last = time.Now()
}
