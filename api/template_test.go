package api

import "testing"

// TestTemplateKey: the key changes with the task spec or the placement and
// with nothing else (ADR 0009), and a task's key equals its service's.
func TestTemplateKey(t *testing.T) {
	three := 3
	base := ServiceSpec{Name: "web", Task: TaskSpec{Image: "nginx:1"}}
	key := base.TemplateKey()

	same := base
	same.Replicas = &three
	same.Labels = map[string]string{"team": "a"}
	if same.TemplateKey() != key {
		t.Error("replicas and labels changed the template key")
	}
	task := Task{Spec: base.Task, Placement: base.Placement}
	if task.TemplateKey() != key {
		t.Error("a task of the service has another template key")
	}

	image := base
	image.Task.Image = "nginx:2"
	placed := base
	placed.Placement.Constraints = []string{"node.role == manager"}
	for name, s := range map[string]ServiceSpec{"image": image, "placement": placed} {
		if s.TemplateKey() == key {
			t.Errorf("a %s change kept the template key", name)
		}
	}
}

// TestUpdateStatusInFlight: nil and ended updates are not in flight; every
// other state is.
func TestUpdateStatusInFlight(t *testing.T) {
	var none *UpdateStatus
	if none.InFlight() {
		t.Error("nil status in flight")
	}
	for state, want := range map[string]bool{
		UpdateUpdating: true, UpdateCanary: true, UpdatePaused: true, UpdateRollingBack: true,
		UpdateCompleted: false, UpdateRolledBack: false, "": false,
	} {
		if got := (&UpdateStatus{State: state}).InFlight(); got != want {
			t.Errorf("state %q: InFlight() = %v, want %v", state, got, want)
		}
	}
}
