package api

import "encoding/json"

// TemplateKey is the comparison key of a task template (ADR 0009): the task
// spec and the placement, as JSON. Two tasks, or a task and its service, run
// the same template exactly when their keys are equal; a change to anything
// else (the replica count, labels, the update policy) replaces no task.
//
// It is one function so that the orchestrator, which replaces the tasks of
// an old template, and the API server, which records a new service version
// and starts an update when the template changed, can never disagree.
func TemplateKey(spec TaskSpec, p Placement) string {
	// Both types are plain data; the only value json refuses, a NaN or
	// infinite CPUs, never passes Validate, so the error is not looked at
	// (as neither copy this replaces did).
	b, _ := json.Marshal(struct {
		S TaskSpec
		P Placement
	}{spec, p})
	return string(b)
}

// TemplateKey is the comparison key of the service's task template.
func (s *ServiceSpec) TemplateKey() string { return TemplateKey(s.Task, s.Placement) }

// TemplateKey is the comparison key of the task template t runs.
func (t *Task) TemplateKey() string { return TemplateKey(t.Spec, t.Placement) }
