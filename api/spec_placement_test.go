package api

import (
	"errors"
	"strings"
	"testing"
)

// TestPlacementValidation: preferences and max_replicas_per_node parse from
// YAML, and each bad value is reported at its field path.
func TestPlacementValidation(t *testing.T) {
	good := `name: web
replicas: 6
task: {command: [x]}
placement:
  constraints: ["node.role == worker", "node.labels.disk == ssd", "node.hostname != db1", "node.id != abc"]
  preferences: [{spread: node.labels.zone}, {spread: node.labels.rack}]
  max_replicas_per_node: 2
`
	s, err := ParseServiceSpec([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Placement.MaxReplicasPerNode != 2 || len(s.Placement.Preferences) != 2 || s.Placement.Preferences[0].Spread != "node.labels.zone" {
		t.Fatalf("parsed %+v", s.Placement)
	}

	for _, c := range []struct {
		name, placement, mode string
		field, text           string
	}{
		{"not a label", `preferences: [{spread: node.hostname}]`, "", "placement.preferences[0].spread", "write node.labels.<key>"},
		{"empty", `preferences: [{spread: ""}]`, "", "placement.preferences[0].spread", "is required"},
		{"bad key", `preferences: [{spread: "node.labels.-x"}]`, "", "placement.preferences[0].spread", "invalid label key"},
		{"twice", `preferences: [{spread: node.labels.a}, {spread: node.labels.a}]`, "", "placement.preferences[1].spread", "twice"},
		{"global", `preferences: [{spread: node.labels.a}]`, "global", "placement.preferences", "only for mode replicated"},
		{"negative", `max_replicas_per_node: -1`, "", "placement.max_replicas_per_node", "negative"},
		{"global cap", `max_replicas_per_node: 1`, "global", "placement.max_replicas_per_node", "only for mode replicated"},
		{"unknown field", `max_replicas: 1`, "", "placement.max_replicas", "unknown field"},
		{"bad constraint key", `constraints: ["node.zone == a"]`, "", "placement.constraints[0]", "unknown key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := "name: web\ntask: {command: [x]}\nplacement: {" + strings.TrimSpace(c.placement) + "}\n"
			if c.mode != "" {
				doc += "mode: " + c.mode + "\n"
			}
			s, err := ParseServiceSpec([]byte(doc))
			if err == nil {
				s.Normalize()
				err = s.Validate()
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v (field %v), want %s: …%s…", err, fe, c.field, c.text)
			}
		})
	}
}

// TestConstraintMatchesEveryKey: each supported key reads the right node
// field; a missing label fails == and passes !=.
func TestConstraintMatchesEveryKey(t *testing.T) {
	n := &Node{ID: "n1abc", Hostname: "web1", Role: "worker", Labels: map[string]string{"zone": "a"}}
	for expr, want := range map[string]bool{
		"node.id == n1abc":       true,
		"node.id != n1abc":       false,
		"node.hostname == web1":  true,
		"node.hostname == web2":  false,
		"node.role == worker":    true,
		"node.role == manager":   false,
		"node.labels.zone == a":  true,
		"node.labels.zone != a":  false,
		"node.labels.zone == b":  false,
		"node.labels.disk == x":  false,
		"node.labels.disk != x":  true,
		"node.labels.zone!=b":    true,
		"  node.role==worker   ": true,
	} {
		c, err := ParseConstraint(expr)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		if got := c.Matches(n); got != want {
			t.Errorf("%q on %+v: %v, want %v", expr, n, got, want)
		}
	}
	for _, bad := range []string{"node.role", "node.role == ", "node.role == a b", "engine.labels.x == 1", "node.labels. == a"} {
		if _, err := ParseConstraint(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
