package api

import (
	"strings"
	"testing"
)

// TestTopologySpecValidation: per-unit mode, units, CPU policy and topology
// are checked with the field path of the offending value.
func TestTopologySpecValidation(t *testing.T) {
	base := "name: a\ntask: {command: [x]%s}\n"
	for _, c := range []struct {
		doc       string
		field     string // "" means valid
		msgSubstr string
	}{
		{"name: a\nmode: per-unit\nunit: core\ntask: {command: [x]}\n", "", ""},
		{"name: a\nmode: per-unit\nunit: numa\nreplicas: 3\ntask: {command: [x]}\n", "", ""},
		{"name: a\nmode: per-unit\nunit: l3\nreplicas: 0\ntask: {command: [x]}\n", "", ""},
		{"name: a\nmode: per-unit\nunit: socketz\ntask: {command: [x]}\n", "unit", "core, l3, numa, socket"},
		{"name: a\nmode: per-unit\ntask: {command: [x]}\n", "unit", "is required"},
		{"name: a\nunit: core\ntask: {command: [x]}\n", "unit", "only for mode per-unit"},
		{"name: a\nmode: global\nunit: core\ntask: {command: [x]}\n", "unit", "mode global"},
		{"name: a\nmode: per-unit\nunit: core\nreplicas: -1\ntask: {command: [x]}\n", "replicas", "negative"},
		{"name: a\nmode: unit\ntask: {command: [x]}\n", "mode", "per-unit"},
		{strings.Replace(base, "%s", ", resources: {cpus: 2, cpu_policy: exclusive}", 1), "", ""},
		{strings.Replace(base, "%s", ", resources: {cpus: 2, cpu_policy: exclusive, topology: require-single-numa}", 1), "", ""},
		{strings.Replace(base, "%s", ", resources: {cpus: 0.5, cpu_policy: shared}", 1), "", ""},
		{strings.Replace(base, "%s", ", resources: {cpus: 1.5, cpu_policy: exclusive}", 1), "task.resources.cpus", "whole number"},
		{strings.Replace(base, "%s", ", resources: {cpu_policy: exclusive}", 1), "task.resources.cpus", "at least 1"},
		{strings.Replace(base, "%s", ", resources: {cpus: 0.5, cpu_policy: exclusive}", 1), "task.resources.cpus", "whole number"},
		{strings.Replace(base, "%s", ", resources: {cpus: 1, cpu_policy: mine}", 1), "task.resources.cpu_policy", "shared or exclusive"},
		{strings.Replace(base, "%s", ", resources: {cpus: 1, cpu_policy: exclusive, topology: numa}", 1), "task.resources.topology", "require-single-numa"},
		{strings.Replace(base, "%s", ", resources: {cpus: 1, topology: require-single-numa}", 1), "task.resources.topology", "cpu_policy: exclusive"},
		// A per-unit task's exclusive CPUs are its unit's: no count needed.
		{"name: a\nmode: per-unit\nunit: core\ntask: {command: [x], resources: {cpu_policy: exclusive}}\n", "", ""},
		{"name: a\nmode: per-unit\nunit: core\ntask: {command: [x], resources: {cpus: 1.5, cpu_policy: exclusive}}\n", "task.resources.cpus", "whole number"},
	} {
		s, err := ParseServiceSpec([]byte(c.doc))
		if err != nil {
			t.Fatalf("%q: parse: %v", c.doc, err)
		}
		s.Normalize()
		err = s.Validate()
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%q: %v", c.doc, err)
		case c.field != "" && err == nil:
			t.Errorf("%q: accepted, want an error on %s", c.doc, c.field)
		case c.field != "" && (FieldOf(err) != c.field || !strings.Contains(err.Error(), c.msgSubstr)):
			t.Errorf("%q: error %q on field %q, want field %s saying %q", c.doc, err, FieldOf(err), c.field, c.msgSubstr)
		}
	}
}

// TestPerUnitReplicasStayOptional: Normalize does not default a per-unit
// service's replicas (nil means every unit).
func TestPerUnitReplicasStayOptional(t *testing.T) {
	s := ServiceSpec{Name: "a", Mode: ModePerUnit, Unit: UnitCore, Task: TaskSpec{Command: []string{"x"}}}
	s.Normalize()
	if s.Replicas != nil {
		t.Fatalf("replicas = %d, want nil", *s.Replicas)
	}
	if !(Resources{CPUPolicy: CPUPolicyExclusive}).Exclusive() || (Resources{}).Exclusive() {
		t.Fatal("Exclusive")
	}
}
