package topology

import (
	"fmt"
	"testing"
)

// BenchmarkAllocate allocates on the 128-CPU fixture with a quarter of the
// CPUs held in scattered pieces, as on a busy node.
func BenchmarkAllocate(b *testing.B) {
	topo := discoverFixture(b, "xeon-2s-snc2")
	m, err := NewMachine(topo)
	if err != nil {
		b.Fatal(err)
	}
	reserved := MustParse("0,64")
	var taken CPUSet
	for i, n := range []int{1, 3, 2, 5, 1, 8, 4, 1, 6} {
		a, err := m.Allocate(reserved, taken, Request{CPUs: n})
		if err != nil {
			b.Fatal(err)
		}
		taken = taken.Union(a.CPUs)
		if i%3 == 0 { // free some again to leave holes
			taken = taken.Difference(NewCPUSet(a.CPUs.List()[0]))
		}
	}
	for _, n := range []int{1, 2, 8, 40} {
		b.Run(fmt.Sprintf("machine/cpus=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Allocate(reserved, taken, Request{CPUs: n}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// Allocate parses and validates the topology on every call.
	b.Run("topology/cpus=8", func(b *testing.B) {
		for b.Loop() {
			if _, err := Allocate(topo, reserved, taken, Request{CPUs: 8}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
