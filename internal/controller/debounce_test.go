package controller

import (
	"testing"
	"time"
)

// The first change of a quiet spell is due at once; changes within the
// window of a handling wait for the window's end, batched into one.
func TestDebouncer(t *testing.T) {
	const window = 300 * time.Millisecond
	d := Debouncer{Window: window}
	if d.C() != nil {
		t.Fatal("due with nothing changed")
	}
	start := time.Now()
	d.Changed()
	<-d.C()
	if took := time.Since(start); took > window/2 {
		t.Fatalf("first change of a quiet spell due after %v, want at once (window %v)", took, window)
	}
	d.Fired()
	start = time.Now()
	d.Changed()
	c := d.C()
	d.Changed() // batched with the one before: the same timer
	if d.C() != c {
		t.Fatal("a second change re-armed the timer")
	}
	<-c
	if took := time.Since(start); took < window*9/10 {
		t.Fatalf("change right after a handling due after %v, want the rest of the %v window", took, window)
	}
	d.Fired()
	if d.C() != nil {
		t.Fatal("still due after Fired")
	}
}
