package topology

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// MaxCPUID is the largest CPU id a CPUSet holds. Linux builds for at most
// 8192 CPUs; the headroom costs nothing, and the bound keeps a hostile list
// such as "0-4000000000" from allocating gigabytes.
const MaxCPUID = 1<<14 - 1

// ErrInvalidCPUList is wrapped by every error of Parse.
var ErrInvalidCPUList = errors.New("topology: invalid CPU list")

// CPUSet is a set of CPU ids (or NUMA node ids), 0 to MaxCPUID. The zero value
// is the empty set. A CPUSet is immutable: every operation returns a new set,
// so values may be copied and shared freely.
type CPUSet struct {
	// w is a bitset with no trailing zero words, so that equal sets have
	// equal words.
	w []uint64
}

// NewCPUSet returns the set of the given ids. It panics on an id outside 0 to
// MaxCPUID: that is a programming error; use Parse for input.
func NewCPUSet(ids ...int) CPUSet {
	var w []uint64
	for _, id := range ids {
		if id < 0 || id > MaxCPUID {
			panic(fmt.Sprintf("topology: CPU id %d out of range 0-%d", id, MaxCPUID))
		}
		w = set(w, id)
	}
	return CPUSet{w: w}
}

func set(w []uint64, id int) []uint64 {
	i := id / 64
	for len(w) <= i {
		w = append(w, 0)
	}
	w[i] |= 1 << uint(id%64)
	return w
}

// setRange sets lo to hi inclusive, a word at a time, so that a long range
// costs no more than its words.
func setRange(w []uint64, lo, hi int) []uint64 {
	for len(w) <= hi/64 {
		w = append(w, 0)
	}
	for i := lo / 64; i <= hi/64; i++ {
		mask := ^uint64(0)
		if i == lo/64 {
			mask &= ^uint64(0) << uint(lo%64)
		}
		if i == hi/64 {
			mask &= ^uint64(0) >> uint(63-hi%64)
		}
		w[i] |= mask
	}
	return w
}

// Parse reads a list in the kernel's format: comma-separated ids and
// inclusive ranges, such as "0-3,8,10-11". Surrounding white space (a sysfs
// file's newline) is ignored and an empty list is the empty set. Elements
// may come in any order and overlap. Anything else — empty elements, signs,
// spaces inside, reversed ranges, ids above MaxCPUID, the kernel's stride
// syntax "0-7:2/4" — is an error wrapping ErrInvalidCPUList.
func Parse(s string) (CPUSet, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return CPUSet{}, nil
	}
	var w []uint64
	for elem := range strings.SplitSeq(t, ",") {
		lo, hi, err := parseRange(elem)
		if err != nil {
			return CPUSet{}, fmt.Errorf("%w %q: %s", ErrInvalidCPUList, clip(s), err.Error())
		}
		w = setRange(w, lo, hi)
	}
	return CPUSet{w: trim(w)}, nil
}

func parseRange(elem string) (lo, hi int, err error) {
	if elem == "" {
		return 0, 0, errors.New("empty element")
	}
	a, b, isRange := strings.Cut(elem, "-")
	lo, err = parseID(a)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	hi, err = parseID(b)
	if err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("range %q ends before it starts", elem)
	}
	return lo, hi, nil
}

func parseID(s string) (int, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a CPU id", clip(s))
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > MaxCPUID {
		return 0, fmt.Errorf("CPU id %s is above the limit %d", clip(s), MaxCPUID)
	}
	return n, nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

func trim(w []uint64) []uint64 {
	for len(w) > 0 && w[len(w)-1] == 0 {
		w = w[:len(w)-1]
	}
	if len(w) == 0 {
		return nil
	}
	return w
}

// MustParse is Parse for lists known to be valid, such as constants in
// tests; it panics on an error.
func MustParse(s string) CPUSet {
	c, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return c
}

// String formats c in the kernel's list format: ascending, with runs of two
// or more ids as ranges ("0-3,8,10-11"). The empty set is "".
func (c CPUSet) String() string {
	var b strings.Builder
	start, prev := -1, -1
	flush := func() {
		if start < 0 {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(start))
		if prev > start {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(prev))
		}
	}
	c.each(func(id int) {
		if id != prev+1 || start < 0 {
			flush()
			start = id
		}
		prev = id
	})
	flush()
	return b.String()
}

// each calls f for every id in ascending order.
func (c CPUSet) each(f func(int)) {
	for i, word := range c.w {
		for word != 0 {
			tz := bits.TrailingZeros64(word)
			f(i*64 + tz)
			word &^= 1 << uint(tz)
		}
	}
}

// List returns the ids in ascending order; nil for the empty set.
func (c CPUSet) List() []int {
	if len(c.w) == 0 {
		return nil
	}
	out := make([]int, 0, c.Len())
	c.each(func(id int) { out = append(out, id) })
	return out
}

// Len returns the number of ids in c.
func (c CPUSet) Len() int {
	n := 0
	for _, word := range c.w {
		n += bits.OnesCount64(word)
	}
	return n
}

// IsEmpty reports whether c has no ids.
func (c CPUSet) IsEmpty() bool { return len(c.w) == 0 }

// Contains reports whether id is in c.
func (c CPUSet) Contains(id int) bool {
	if id < 0 || id/64 >= len(c.w) {
		return false
	}
	return c.w[id/64]&(1<<uint(id%64)) != 0
}

// Min returns the smallest id in c, and false if c is empty.
func (c CPUSet) Min() (int, bool) {
	for i, word := range c.w {
		if word != 0 {
			return i*64 + bits.TrailingZeros64(word), true
		}
	}
	return 0, false
}

// Union returns the ids in c or o.
func (c CPUSet) Union(o CPUSet) CPUSet {
	a, b := c.w, o.w
	if len(a) < len(b) {
		a, b = b, a
	}
	if len(a) == 0 {
		return CPUSet{}
	}
	w := make([]uint64, len(a))
	copy(w, a)
	for i, word := range b {
		w[i] |= word
	}
	return CPUSet{w: w}
}

// Intersect returns the ids in both c and o.
func (c CPUSet) Intersect(o CPUSet) CPUSet {
	n := min(len(c.w), len(o.w))
	w := make([]uint64, n)
	for i := range n {
		w[i] = c.w[i] & o.w[i]
	}
	return CPUSet{w: trim(w)}
}

// Difference returns the ids in c and not in o.
func (c CPUSet) Difference(o CPUSet) CPUSet {
	if len(c.w) == 0 {
		return CPUSet{}
	}
	w := make([]uint64, len(c.w))
	copy(w, c.w)
	for i := 0; i < len(w) && i < len(o.w); i++ {
		w[i] &^= o.w[i]
	}
	return CPUSet{w: trim(w)}
}

// Equal reports whether c and o hold the same ids.
func (c CPUSet) Equal(o CPUSet) bool {
	if len(c.w) != len(o.w) {
		return false
	}
	for i := range c.w {
		if c.w[i] != o.w[i] {
			return false
		}
	}
	return true
}

// IsSubsetOf reports whether every id of c is in o.
func (c CPUSet) IsSubsetOf(o CPUSet) bool {
	if len(c.w) > len(o.w) {
		return false
	}
	for i, word := range c.w {
		if word&^o.w[i] != 0 {
			return false
		}
	}
	return true
}

// Overlaps reports whether c and o have an id in common.
func (c CPUSet) Overlaps(o CPUSet) bool {
	for i := 0; i < len(c.w) && i < len(o.w); i++ {
		if c.w[i]&o.w[i] != 0 {
			return true
		}
	}
	return false
}

// MarshalText writes c in list format, so a CPUSet can be a JSON string.
func (c CPUSet) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a list with Parse.
func (c *CPUSet) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}
