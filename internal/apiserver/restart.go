package apiserver

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// restartService answers POST /services/{name}/restart: a new version whose
// only change is task.force_update raised by one. That is a change of the
// task template, so the orchestrator replaces every task as any update does,
// under the spec's update policy (health, monitor, failure action).
func (s *Server) restartService(w http.ResponseWriter, r *http.Request) error {
	for range casRetries {
		svc, err := s.lookupService(r)
		if err != nil {
			return err
		}
		if svc.UpdateStatus.InFlight() {
			return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
				Message: fmt.Sprintf("service %s has an update in progress (state %s): let it end, or roll it back, before a restart", svc.Spec.Name, svc.UpdateStatus.State)}
		}
		spec := svc.Spec
		spec.Task.ForceUpdate++
		out, err := s.commitVersion(r.Context(), r, newVersion{kind: kindDeploy, old: &svc, spec: spec, summary: "restart"})
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("service restarted", "service", spec.Name, "version", out.Version)
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	return busy(r.PathValue("name"))
}
