package topology

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/berth-project/berth/api"
)

// HolderReserved is the holder name Render's callers give to CPUs reserved
// for the system.
const HolderReserved = "reserved"

// Render draws t as text for `berth node topology NODE`: sockets, then the
// NUMA nodes in each (with memory), the L3 groups in each, the cores in
// each, and every CPU of a core with its holder from holders (a task name,
// or HolderReserved) or "-" when nobody holds it. A unit that straddles its
// parent (an L3 group over two NUMA nodes, say) shows the CPUs it has inside
// the parent and, after "of", all of its own. A topology that is not valid
// renders as one line saying why.
func Render(t api.Topology, holders map[int]string) string {
	m, err := NewMachine(t)
	if err != nil {
		return "cannot draw the topology: " + err.Error() + "\n"
	}
	return m.Render(holders)
}

// Render is the function Render on m's topology.
func (m *Machine) Render(holders map[int]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s, %s, %s, %s online (%s)\n",
		plural(len(m.sockets), "socket"), plural(len(m.numa), "NUMA node"),
		plural(len(m.l3), "L3 group"), plural(len(m.cores), "core"),
		plural(m.online.Len(), "CPU"), m.online)
	if !m.offline.IsEmpty() {
		fmt.Fprintf(&b, "offline CPUs: %s\n", m.offline)
	}

	maxCPU, maxCore, holderW := 0, 0, 1
	for _, c := range m.cores {
		maxCPU = max(maxCPU, c.cpus[len(c.cpus)-1])
		maxCore = max(maxCore, c.id)
		for _, id := range c.cpus {
			holderW = max(holderW, len([]rune(holder(holders, id))))
		}
	}
	cpuW, coreW := len(strconv.Itoa(maxCPU)), len(strconv.Itoa(maxCore))

	for si, s := range m.sockets {
		fmt.Fprintf(&b, "socket %d: cpus %s\n", s.id, s.cpus)
		for ni, n := range m.numa {
			inSocket := n.cpus.Intersect(s.cpus)
			if inSocket.IsEmpty() {
				continue
			}
			fmt.Fprintf(&b, "  numa %d: cpus %s, memory %s\n", n.id, part(inSocket, n.cpus), memory(n.memory))
			for li, l := range m.l3 {
				inNUMA := l.cpus.Intersect(inSocket)
				if inNUMA.IsEmpty() {
					continue
				}
				fmt.Fprintf(&b, "    l3 %d: cpus %s\n", l.id, part(inNUMA, l.cpus))
				for _, c := range m.cores {
					if c.socket != si || c.numa != ni || c.l3 != li {
						continue
					}
					var line strings.Builder
					fmt.Fprintf(&line, "      core %-*d ", coreW, c.id)
					for _, id := range c.cpus {
						fmt.Fprintf(&line, " cpu %*d %-*s", cpuW, id, holderW, holder(holders, id))
					}
					b.WriteString(strings.TrimRight(line.String(), " "))
					b.WriteByte('\n')
				}
			}
		}
	}
	for _, n := range m.numa {
		if n.cpus.IsEmpty() {
			fmt.Fprintf(&b, "numa %d: no CPUs, memory %s\n", n.id, memory(n.memory))
		}
	}
	return b.String()
}

// part shows the CPUs of a unit inside its parent, and all of the unit's
// CPUs when that is not all of them.
func part(inside, all CPUSet) string {
	if inside.Equal(all) {
		return inside.String()
	}
	return inside.String() + " of " + all.String()
}

func memory(b api.ByteSize) string {
	if b == 0 {
		return "unknown"
	}
	// Show whole GiB or MiB when it is near enough: MemTotal is never round.
	switch {
	case b >= 10<<30:
		return fmt.Sprintf("%.0fGiB", float64(b)/(1<<30))
	case b >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%.0fMiB", float64(b)/(1<<20))
	}
}

func holder(holders map[int]string, id int) string {
	h, ok := holders[id]
	if !ok || h == "" {
		return "-"
	}
	// One word per holder keeps the columns; names come from users.
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, h)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
