package topology

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		str  string
	}{
		{"", nil, ""},
		{"\n", nil, ""},
		{"0", []int{0}, "0"},
		{"0-1\n", []int{0, 1}, "0-1"},
		{"0-3,8,10-11", []int{0, 1, 2, 3, 8, 10, 11}, "0-3,8,10-11"},
		{"5,3,4", []int{3, 4, 5}, "3-5"},
		{"1-3,2-4", []int{1, 2, 3, 4}, "1-4"},
		{"7-7", []int{7}, "7"},
		{"63-64", []int{63, 64}, "63-64"},
		{"  2,0  ", []int{0, 2}, "0,2"},
		{"007", []int{7}, "7"},
		{"16383", []int{MaxCPUID}, "16383"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(got.List(), tt.want) {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got.List(), tt.want)
		}
		if got.String() != tt.str {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got.String(), tt.str)
		}
		if got.Len() != len(tt.want) {
			t.Errorf("Parse(%q).Len() = %d, want %d", tt.in, got.Len(), len(tt.want))
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		",", "1,", ",1", "1,,2", "-1", "1-", "-", "3-1", "a", "1 ,2", "1, 2", "1-2-3",
		"+1", "0x1", "0-7:2/4", "16384", "0-16384", "99999999999999999999999", "1.5",
	} {
		_, err := Parse(in)
		if !errors.Is(err, ErrInvalidCPUList) {
			t.Errorf("Parse(%q) = %v, want ErrInvalidCPUList", in, err)
			continue
		}
		if !strings.Contains(err.Error(), "topology: invalid CPU list") {
			t.Errorf("Parse(%q) error %q lacks the package prefix", in, err)
		}
	}
}

func TestCPUSetJSON(t *testing.T) {
	in := struct{ S CPUSet }{MustParse("0-2,9")}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"S":"0-2,9"}` {
		t.Fatalf("marshal = %s", b)
	}
	var out struct{ S CPUSet }
	if err := json.Unmarshal(b, &out); err != nil || !out.S.Equal(in.S) {
		t.Fatalf("unmarshal = %v, %v", out.S, err)
	}
	if err := json.Unmarshal([]byte(`{"S":"0-"}`), &out); !errors.Is(err, ErrInvalidCPUList) {
		t.Fatalf("unmarshal of a bad list = %v", err)
	}
}

// TestCPUSetModel checks the set operations against a map.
func TestCPUSetModel(t *testing.T) {
	genIDs := rapid.SliceOfN(rapid.OneOf(rapid.IntRange(0, 200), rapid.IntRange(0, MaxCPUID)), 0, 40)
	rapid.Check(t, func(t *rapid.T) {
		a, b := genIDs.Draw(t, "a"), genIDs.Draw(t, "b")
		sa, sb := NewCPUSet(a...), NewCPUSet(b...)
		ma, mb := toMap(a), toMap(b)
		check := func(op string, got CPUSet, want map[int]bool) {
			if !slices.Equal(got.List(), sortedKeys(want)) {
				t.Fatalf("%s = %v, want %v", op, got.List(), sortedKeys(want))
			}
			if got.Len() != len(want) {
				t.Fatalf("%s.Len() = %d, want %d", op, got.Len(), len(want))
			}
			if !got.Equal(NewCPUSet(sortedKeys(want)...)) {
				t.Fatalf("%s is not Equal to the same set built anew", op)
			}
		}
		union, inter, diff := map[int]bool{}, map[int]bool{}, map[int]bool{}
		for k := range ma {
			union[k] = true
			if mb[k] {
				inter[k] = true
			} else {
				diff[k] = true
			}
		}
		for k := range mb {
			union[k] = true
		}
		check("a", sa, ma)
		check("a∪b", sa.Union(sb), union)
		check("a∩b", sa.Intersect(sb), inter)
		check("a−b", sa.Difference(sb), diff)
		if got := sa.IsSubsetOf(sb); got != (len(diff) == 0) {
			t.Fatalf("IsSubsetOf = %v with a−b = %v", got, sortedKeys(diff))
		}
		if got := sa.Overlaps(sb); got != (len(inter) > 0) {
			t.Fatalf("Overlaps = %v with a∩b = %v", got, sortedKeys(inter))
		}
		if got := sa.IsEmpty(); got != (len(ma) == 0) {
			t.Fatalf("IsEmpty = %v for %v", got, sortedKeys(ma))
		}
		probe := rapid.IntRange(-1, MaxCPUID+1).Draw(t, "probe")
		if sa.Contains(probe) != ma[probe] {
			t.Fatalf("Contains(%d) = %v", probe, sa.Contains(probe))
		}
		if m, ok := sa.Min(); ok != (len(ma) > 0) || ok && m != sortedKeys(ma)[0] {
			t.Fatalf("Min = %d, %v", m, ok)
		}
		back, err := Parse(sa.String())
		if err != nil || !back.Equal(sa) {
			t.Fatalf("Parse(%q) = %v, %v", sa.String(), back, err)
		}
		// Operations never change their operands.
		check("a after the operations", sa, ma)
		check("b after the operations", sb, mb)
	})
}

func toMap(ids []int) map[int]bool {
	m := map[int]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// FuzzParse: whatever parses prints in canonical form, and the canonical
// form parses back to the same set and prints the same again.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "0", "0-3,8,10-11", "5,3,4", "1-3,2-4", "0-16383", "1,,2", "3-1", "63-64,128\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidCPUList) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalidCPUList", s, err)
			}
			return
		}
		str := c.String()
		back, err := Parse(str)
		if err != nil {
			t.Fatalf("Parse(%q) failed on String() of Parse(%q): %v", str, s, err)
		}
		if !back.Equal(c) || back.String() != str {
			t.Fatalf("round trip of %q: %q → %q", s, str, back.String())
		}
		list := c.List()
		if len(list) != c.Len() || !slices.IsSorted(list) {
			t.Fatalf("List() of %q = %v is not sorted or has the wrong length %d", s, list, c.Len())
		}
		for _, id := range list {
			if !c.Contains(id) {
				t.Fatalf("%q: List has %d but Contains says no", s, id)
			}
		}
	})
}
