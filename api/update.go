package api

import (
	"fmt"
	"math"
	"time"
)

// Task orders of an update (UpdatePolicy.Order).
const (
	// OrderStartFirst starts a slot's new task and stops the old one only
	// once the new one is healthy. It is the default.
	OrderStartFirst = "start-first"
	// OrderStopFirst stops a slot's old task before its new one starts: for
	// services that cannot run two versions side by side, or nodes without
	// room for both.
	OrderStopFirst = "stop-first"
)

// Failure actions of an update (UpdatePolicy.FailureAction).
const (
	// FailurePause stops moving further tasks and leaves the update paused
	// until `berth service update NAME --resume` or a new deploy.
	FailurePause = "pause"
	// FailureContinue carries on with the update.
	FailureContinue = "continue"
	// FailureRollback rolls the service back to the version the update
	// started from. It is the default of update:; not allowed in rollback:.
	FailureRollback = "rollback"
)

// Update states (UpdateStatus.State).
const (
	UpdateUpdating    = "updating"
	UpdateCanary      = "canary" // canaries run beside the old tasks, waiting for promotion
	UpdatePaused      = "paused"
	UpdateCompleted   = "completed"
	UpdateRollingBack = "rolling_back"
	UpdateRolledBack  = "rolled_back"
)

// Defaults of UpdatePolicy.
const (
	DefaultUpdateParallelism = 1
	DefaultUpdateMonitor     = 5 * time.Second
	// DefaultVersionHistory is how many versions of a service are kept.
	DefaultVersionHistory = 10
)

// UpdatePolicy says how the tasks of a service move to a new version (the
// spec's update:) or back to the previous one (rollback:).
type UpdatePolicy struct {
	// Parallelism is how many tasks move at once; 0 means all at once.
	// Default 1.
	Parallelism *int `json:"parallelism,omitempty"`
	// Delay is the pause between one batch counting as updated and the
	// next batch starting.
	Delay Duration `json:"delay,omitempty"`
	// Order is OrderStartFirst (default) or OrderStopFirst.
	Order string `json:"order,omitempty"`
	// Monitor is how long a new task must stay running and healthy to count
	// as updated; a task that fails or turns unhealthy within it counts as
	// failed. Default 5s.
	Monitor Duration `json:"monitor,omitempty"`
	// MaxFailureRatio is the share of failed tasks (0 to 1) the update
	// tolerates before FailureAction. Default 0.
	MaxFailureRatio *float64 `json:"max_failure_ratio,omitempty"`
	// FailureAction is FailurePause, FailureContinue or FailureRollback.
	// Default FailureRollback for update:, FailurePause for rollback:.
	FailureAction string `json:"failure_action,omitempty"`
	// Canary (update: only) starts this many tasks of the new version beside
	// the old ones and holds the update until `berth service promote` or,
	// with AutoPromote, until they have been healthy for Monitor.
	Canary int `json:"canary,omitempty"`
	// AutoPromote (update: only) promotes canaries once healthy for Monitor.
	AutoPromote bool `json:"auto_promote,omitempty"`
}

// ParallelismOrDefault is Parallelism, or its default when unset.
func (p *UpdatePolicy) ParallelismOrDefault() int {
	if p == nil || p.Parallelism == nil {
		return DefaultUpdateParallelism
	}
	return *p.Parallelism
}

// UpdateStatus is the state of a service's latest update or rollback.
type UpdateStatus struct {
	// State is one of the Update* states.
	State string `json:"state"`
	// Message says why the update is in its state (the failed task and its
	// error, for a pause or an automatic rollback).
	Message string `json:"message,omitempty"`
	// FromVersion and ToVersion are the service versions the update moves
	// between.
	FromVersion uint64 `json:"from_version"`
	ToVersion   uint64 `json:"to_version"`
	// Updated is how many tasks count as updated (healthy for Monitor);
	// Failed how many new tasks failed; Total how many must be updated.
	Updated int `json:"updated"`
	Failed  int `json:"failed"`
	Total   int `json:"total"`
	// StartedAt is when the update began; CompletedAt when it completed,
	// paused, or rolled back.
	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// Rollback is set when the update is a rollback, manual or automatic:
	// it moves tasks with the rollback: policy, runs no canaries, cannot
	// roll back in turn, and resumes as a rollback after a pause.
	Rollback bool `json:"rollback,omitempty"`
	// Promoted is set once the update's canaries were promoted (by
	// `berth service promote` or auto_promote): the update then rolls on
	// over every slot. An update with canaries that is not promoted holds
	// at them, also when it is resumed after a pause.
	Promoted bool `json:"promoted,omitempty"`
}

// InFlight reports whether s is an update that has not ended: updating,
// at its canaries, paused or rolling back. A nil s (no update ever) is not
// in flight. The orchestrator and the API server both ask it, so they agree
// on when a new update, rollback or restart may start.
func (s *UpdateStatus) InFlight() bool {
	if s == nil {
		return false
	}
	switch s.State {
	case UpdateUpdating, UpdateCanary, UpdatePaused, UpdateRollingBack:
		return true
	}
	return false
}

// ServiceVersion is one kept version of a service's spec.
type ServiceVersion struct {
	// Service is the service's name.
	Service string `json:"service"`
	// Version is the service version this spec was.
	Version uint64 `json:"version"`
	// Spec is the spec of that version.
	Spec ServiceSpec `json:"spec"`
	// CreatedAt is when the version was deployed.
	CreatedAt time.Time `json:"created_at"`
	// Author is who deployed it (the API identity).
	Author string `json:"author,omitempty"`
	// Summary is a one-line summary of what changed from the version before.
	Summary string `json:"summary,omitempty"`
	// Revision is the store's modification revision; set on read.
	Revision int64 `json:"revision,omitempty"`
}

// normalizeUpdate fills in the defaults of the update and rollback policies.
func (s *ServiceSpec) normalizeUpdate() {
	fill := func(p *UpdatePolicy, action string) {
		if p.Parallelism == nil {
			n := DefaultUpdateParallelism
			p.Parallelism = &n
		}
		if p.Order == "" {
			p.Order = OrderStartFirst
		}
		if p.Monitor == 0 {
			p.Monitor = Duration(DefaultUpdateMonitor)
		}
		if p.MaxFailureRatio == nil {
			zero := 0.0
			p.MaxFailureRatio = &zero
		}
		if p.FailureAction == "" {
			p.FailureAction = action
		}
	}
	if s.Update == nil {
		s.Update = &UpdatePolicy{}
	}
	if s.Rollback == nil {
		s.Rollback = &UpdatePolicy{}
	}
	fill(s.Update, FailureRollback)
	fill(s.Rollback, FailurePause)
}

// validateUpdate checks the update and rollback policies.
func (s *ServiceSpec) validateUpdate(add func(string, string, ...any)) {
	check := func(f string, p *UpdatePolicy, rollback bool) {
		if p == nil {
			return
		}
		if p.Parallelism != nil && *p.Parallelism < 0 {
			add(f+".parallelism", "must not be negative (got %d); 0 means all at once", *p.Parallelism)
		}
		if p.Delay < 0 {
			add(f+".delay", "must not be negative (got %s)", p.Delay)
		}
		if p.Monitor < 0 {
			add(f+".monitor", "must not be negative (got %s)", p.Monitor)
		}
		switch p.Order {
		case OrderStartFirst, OrderStopFirst:
		default:
			add(f+".order", "unknown order %q: use %s or %s", truncate(p.Order), OrderStartFirst, OrderStopFirst)
		}
		if r := p.MaxFailureRatio; r != nil && (*r < 0 || *r > 1 || math.IsNaN(*r)) {
			add(f+".max_failure_ratio", "must be between 0 and 1 (got %v)", *r)
		}
		switch p.FailureAction {
		case FailurePause, FailureContinue:
		case FailureRollback:
			if rollback {
				add(f+".failure_action", "a rollback cannot roll back: use %s or %s", FailurePause, FailureContinue)
			}
		default:
			add(f+".failure_action", "unknown action %q: use %s, %s or %s", truncate(p.FailureAction), FailurePause, FailureContinue, FailureRollback)
		}
		if rollback {
			if p.Canary != 0 {
				add(f+".canary", "is only for update:")
			}
			if p.AutoPromote {
				add(f+".auto_promote", "is only for update:")
			}
			return
		}
		switch {
		case p.Canary < 0:
			add(f+".canary", "must not be negative (got %d)", p.Canary)
		case p.Canary > MaxReplicas:
			add(f+".canary", "%d is over the limit of %d", p.Canary, MaxReplicas)
		case p.Canary > 0 && s.Mode != ModeReplicated:
			add(f+".canary", "is only for mode replicated")
		}
		if p.AutoPromote && p.Canary == 0 {
			add(f+".auto_promote", "needs canary")
		}
	}
	check("update", s.Update, false)
	check("rollback", s.Rollback, true)
}

// Warnings returns advice about a valid spec that is accepted as it is, such
// as a monitor window shorter than the health-check interval.
func (s *ServiceSpec) Warnings() []string {
	var out []string
	h := s.Task.Health
	if h == nil {
		return nil
	}
	for _, p := range []struct {
		f string
		p *UpdatePolicy
	}{{"update", s.Update}, {"rollback", s.Rollback}} {
		if p.p != nil && p.p.Monitor > 0 && p.p.Monitor < h.Interval {
			out = append(out, fmt.Sprintf("%s.monitor %s is shorter than task.health.interval %s: a task may count as updated before its health is checked again",
				p.f, p.p.Monitor, h.Interval))
		}
	}
	return out
}

// CanarySlotBase is the slot number below every canary's: the orchestrator
// runs canary i (from 1) in slot CanarySlotBase+i, above any replica's slot,
// so that a canary is told from a replica by its slot alone.
const CanarySlotBase = MaxReplicas

// IsCanarySlot reports whether slot is a canary's (see CanarySlotBase).
func IsCanarySlot(slot int) bool { return slot > CanarySlotBase }

// DeployPlan is what a deploy would do, answered to PUT
// /services/{name}?dry_run=true instead of doing it: nothing is stored.
type DeployPlan struct {
	// Service is the service's name.
	Service string `json:"service"`
	// Action is "create", "update" (a new version) or "none" (the spec is
	// the stored one).
	Action string `json:"action"`
	// FromVersion is the stored version (0 for a new service); ToVersion the
	// version the deploy would write (FromVersion when nothing changes).
	FromVersion uint64 `json:"from_version"`
	ToVersion   uint64 `json:"to_version"`
	// Summary says what changes, as service history would show it.
	Summary string `json:"summary,omitempty"`
	// TemplateChanged reports a change of the task template (task or
	// placement): the service's tasks are replaced by a rolling update.
	TemplateChanged bool `json:"template_changed"`
	// Replace lists the tasks a rolling update would replace.
	Replace []PlanTask `json:"replace"`
	// Stop lists the tasks stopped without a replacement (replicas lowered).
	Stop []PlanTask `json:"stop"`
	// Start is how many new tasks would start for new slots (replicas
	// raised, or a new replicated service). Global and per-unit services
	// start one per eligible node or unit, which the plan does not count.
	Start int `json:"start"`
	// Warnings is advice about the spec, as a deploy gives it.
	Warnings []string `json:"warnings,omitempty"`
}

// PlanTask names one task in a DeployPlan.
type PlanTask struct {
	// ID is the task's id.
	ID string `json:"id"`
	// Slot is the task's slot (0 for a global service's task).
	Slot int `json:"slot"`
	// Node is the id of the node the task runs on.
	Node string `json:"node,omitempty"`
	// SpecVersion is the service version the task runs.
	SpecVersion uint64 `json:"spec_version"`
}
