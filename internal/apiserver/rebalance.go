package apiserver

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// rebalanceService answers POST /services/{name}/rebalance: it asks the
// orchestrator to spread the service's tasks evenly over the nodes that
// can run them, once, even if the service opted out of rebalancing
// (rebalance: false). It only counts the request up in the service's
// RebalanceStatus; the orchestrator moves the tasks (start-first, within
// the update policy's parallelism) and marks the request done.
func (s *Server) rebalanceService(w http.ResponseWriter, r *http.Request) error {
	for range casRetries {
		svc, err := s.lookupService(r)
		if err != nil {
			return err
		}
		if err := rebalanceable(svc.Spec); err != nil {
			return err
		}
		st := api.RebalanceStatus{}
		if svc.RebalanceStatus != nil {
			st = *svc.RebalanceStatus
		}
		st.Requested++
		st.RequestedAt = s.now().UTC()
		svc.RebalanceStatus = &st
		err = s.st.Services.Update(r.Context(), &svc)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("rebalance requested", "service", svc.Spec.Name, "request", st.Requested)
		writeJSON(w, 200, svc)
		return nil
	}
	return busy(r.PathValue("name"))
}

// rebalanceable refuses a service whose tasks are never moved to spread
// them: global and per-unit tasks belong to their node, and placement
// preferences spread over label groups, which evening out nodes would undo.
func rebalanceable(spec api.ServiceSpec) error {
	switch {
	case spec.Mode != api.ModeReplicated && spec.Mode != "":
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: fmt.Sprintf("service %s is %s: each of its tasks belongs to its node and is never moved", spec.Name, spec.Mode)}
	case len(spec.Placement.Preferences) > 0:
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: fmt.Sprintf("service %s spreads its tasks by placement.preferences; rebalancing over nodes would undo that", spec.Name)}
	}
	return nil
}
