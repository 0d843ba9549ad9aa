package api

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// specDocSections names, for each spec type that has a field table of its
// own in docs/spec.md, the heading of the section that holds it. A struct
// type missing here (HTTPCheck, TCPCheck) is documented in its parent's
// table with a dotted key: `http.port` in the HealthCheck table.
var specDocSections = map[reflect.Type]string{
	reflect.TypeFor[ServiceSpec]():         "ServiceSpec",
	reflect.TypeFor[TaskSpec]():            "TaskSpec",
	reflect.TypeFor[PortSpec]():            "PortSpec",
	reflect.TypeFor[RouteSpec]():           "RouteSpec",
	reflect.TypeFor[HealthCheck]():         "HealthCheck",
	reflect.TypeFor[Resources]():           "Resources",
	reflect.TypeFor[RestartPolicy]():       "RestartPolicy",
	reflect.TypeFor[Placement]():           "Placement",
	reflect.TypeFor[PlacementPreference](): "Spread preferences",
	reflect.TypeFor[UpdatePolicy]():        "UpdatePolicy (`update:` and `rollback:`)",
}

// TestSpecDocsMatchTypes keeps docs/spec.md and the spec types together:
// every field a user can write (as ParseServiceSpec decodes it: the JSON
// names of jsonFields, walked from ServiceSpec through nested structs,
// pointers, lists and maps) must have a row in its type's field table, and
// every row of those tables must name a field that exists, so renaming or
// adding a field without the docs fails here.
func TestSpecDocsMatchTypes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/spec.md")
	if err != nil {
		t.Fatal(err)
	}
	tables := specFieldTables(string(b))

	// want[section] is the set of keys the section's table must hold.
	want := map[string]map[string]bool{}
	seen := map[reflect.Type]bool{}
	var walk func(rt reflect.Type, section, prefix string)
	walk = func(rt reflect.Type, section, prefix string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Array || rt.Kind() == reflect.Map {
			rt = rt.Elem()
		}
		// Duration and ByteSize decode themselves: they are values, not
		// objects with fields.
		if rt.Kind() != reflect.Struct || reflect.PointerTo(rt).Implements(jsonUnmarshaler) {
			return
		}
		if s, ok := specDocSections[rt]; ok {
			if seen[rt] {
				return
			}
			seen[rt] = true
			section, prefix = s, ""
		}
		if want[section] == nil {
			want[section] = map[string]bool{}
		}
		names := make([]string, 0)
		fields := jsonFields(rt)
		for name := range fields {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			want[section][prefix+name] = true
			walk(fields[name].Type, section, prefix+name+".")
		}
	}
	walk(reflect.TypeFor[ServiceSpec](), "", "")

	for rt, section := range specDocSections {
		if !seen[rt] {
			t.Errorf("%s is listed in specDocSections but is not reachable from ServiceSpec", rt.Name())
		}
		if _, ok := tables[section]; !ok {
			t.Errorf("docs/spec.md has no section %q with a field table (for %s)", section, rt.Name())
		}
	}
	for section, keys := range want {
		for key := range keys {
			// A nested struct documented inline needs a row for each of
			// its leaves, not for itself (`http` of HealthCheck).
			if hasChildren(keys, key) {
				continue
			}
			if !tables[section][key] {
				t.Errorf("docs/spec.md: the table of %q has no row for field `%s`", section, key)
			}
		}
	}
	for section, rows := range tables {
		keys, ok := want[section]
		if !ok {
			continue // a table of another kind (not a spec type's fields)
		}
		for key := range rows {
			if !keys[key] {
				t.Errorf("docs/spec.md: the table of %q documents `%s`, which is not a field of the spec types", section, key)
			}
		}
	}
}

func hasChildren(keys map[string]bool, key string) bool {
	for k := range keys {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

var (
	specHeading  = regexp.MustCompile(`^#{2,3} (.+)$`)
	specFieldRow = regexp.MustCompile("^\\| `([^`]+)` \\|")
)

// specFieldTables returns, for each section heading of doc, the first-column
// keys of its tables whose header starts with "| Field |".
func specFieldTables(doc string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	section, inTable := "", false
	for _, line := range strings.Split(doc, "\n") {
		if m := specHeading.FindStringSubmatch(line); m != nil {
			section, inTable = m[1], false
			continue
		}
		switch {
		case strings.HasPrefix(line, "| Field |"):
			inTable = true
			if out[section] == nil {
				out[section] = map[string]bool{}
			}
		case !strings.HasPrefix(line, "|"):
			inTable = false
		case inTable:
			if m := specFieldRow.FindStringSubmatch(line); m != nil {
				out[section][m[1]] = true
			}
		}
	}
	return out
}

// TestConceptsDocsEveryTaskState checks the task lifecycle table of
// docs/concepts.md against the states a task can be in: a state added to
// the code without a row, or a row for a state that no longer exists, fails.
func TestConceptsDocsEveryTaskState(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/concepts.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "| State | Set by | Meaning |")
	if start < 0 {
		t.Fatal("docs/concepts.md has no task state table (| State | Set by | Meaning |)")
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(doc[start:], "\n")[2:] {
		m := specFieldRow.FindStringSubmatch(line)
		if m == nil {
			break
		}
		rows[m[1]] = true
	}
	for s := range stateOrder {
		if !rows[string(s)] {
			t.Errorf("docs/concepts.md: the task state table has no row for %q", s)
		}
	}
	for r := range rows {
		if !TaskState(r).Valid() {
			t.Errorf("docs/concepts.md: the task state table has a row for %q, which is not a task state", r)
		}
	}
}

// TestSpecDocsExamplesParse reads every YAML example of docs/spec.md as a
// spec: each must decode with ParseServiceSpec (so an example that uses a
// renamed or misspelt field fails), and each that names a service must also
// be valid after Normalize. A block with several documents (`---`) is read
// as one spec per document, as the text says they are separate files.
func TestSpecDocsExamplesParse(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/spec.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) == 0 {
		t.Fatal("docs/spec.md has no YAML examples")
	}
	named := regexp.MustCompile(`(?m)^name:`)
	for i, m := range blocks {
		for j, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(m[1], -1) {
			spec, err := ParseServiceSpec([]byte(doc))
			if err != nil {
				t.Errorf("docs/spec.md YAML example %d, document %d: %v\n%s", i+1, j+1, err, doc)
				continue
			}
			if !named.MatchString(doc) {
				continue // a fragment: only its field names are checked
			}
			spec.Normalize()
			if err := spec.Validate(); err != nil {
				t.Errorf("docs/spec.md YAML example %d, document %d is not a valid spec: %v\n%s", i+1, j+1, err, doc)
			}
		}
	}
}
