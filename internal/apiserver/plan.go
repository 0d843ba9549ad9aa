package apiserver

import (
	"errors"
	"net/http"
	"sort"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// planDeploy answers PUT /services/{name}?dry_run=true: what the deploy of
// spec (checked, normalized) would do, and nothing stored. The tasks it
// names are those desired running now; the orchestrator decides the order.
func (s *Server) planDeploy(w http.ResponseWriter, r *http.Request, spec api.ServiceSpec, warnings []string) error {
	ctx := r.Context()
	if _, err := s.checkMeshClash(ctx, spec); err != nil {
		return err
	}
	plan := api.DeployPlan{Service: spec.Name, Replace: []api.PlanTask{}, Stop: []api.PlanTask{}, Warnings: warnings}
	old, err := s.st.Services.Get(ctx, spec.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		plan.Action, plan.ToVersion, plan.Summary = "create", 1, "created"
		if spec.Mode == api.ModeReplicated || spec.Mode == "" {
			plan.Start = spec.ReplicaCount()
		}
		writeJSON(w, http.StatusOK, plan)
		return nil
	case err != nil:
		return err
	}
	if spec.Task.ForceUpdate == 0 {
		spec.Task.ForceUpdate = old.Spec.Task.ForceUpdate // as writeSpec does
	}
	plan.FromVersion, plan.ToVersion = old.Version, old.Version
	if specEqual(old.Spec, spec) {
		plan.Action = "none"
		writeJSON(w, http.StatusOK, plan)
		return nil
	}
	plan.Action, plan.ToVersion = "update", old.Version+1
	plan.Summary = summarize(old.Spec, spec)
	plan.TemplateChanged = old.Spec.TemplateKey() != spec.TemplateKey()
	tasks, _, err := s.st.Tasks.List(ctx)
	if err != nil {
		return err
	}
	replicated := spec.Mode == api.ModeReplicated || spec.Mode == ""
	have := map[int]bool{}
	for _, t := range tasks {
		if t.ServiceID != old.ID || t.DesiredState != api.TaskRunning {
			continue
		}
		pt := api.PlanTask{ID: t.ID, Slot: t.Slot, Node: t.NodeID, SpecVersion: t.SpecVersion}
		switch {
		case replicated && !api.IsCanarySlot(t.Slot) && t.Slot > spec.ReplicaCount():
			plan.Stop = append(plan.Stop, pt)
		case plan.TemplateChanged:
			plan.Replace = append(plan.Replace, pt)
		}
		have[t.Slot] = true
	}
	if replicated {
		for slot := 1; slot <= spec.ReplicaCount(); slot++ {
			if !have[slot] {
				plan.Start++
			}
		}
	}
	for _, l := range [][]api.PlanTask{plan.Replace, plan.Stop} {
		sort.Slice(l, func(i, j int) bool { return l[i].Slot < l[j].Slot || l[i].Slot == l[j].Slot && l[i].ID < l[j].ID })
	}
	writeJSON(w, http.StatusOK, plan)
	return nil
}
