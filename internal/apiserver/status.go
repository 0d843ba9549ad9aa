package apiserver

import (
	"net/http"

	"github.com/berth-project/berth/api"
)

// applyStatuses records a report's task statuses: it reads the tasks in one
// round trip and writes the changed ones in small guarded batches
// (store.UpdateMany); a task that changed meanwhile is read and tried again.
// A report of 1,000 statuses (an agent starting 500 tasks) so costs a few
// dozen round trips, not 2,000: the agent sends its next heartbeat only after
// this one returns, and one per task made nodes miss heartbeats under a
// scale-up (issue 12).
func (s *Server) applyStatuses(r *http.Request, nodeID string, updates []api.TaskStatusUpdate) error {
	if len(updates) == 1 {
		return s.applyStatus(r, nodeID, updates[0])
	}
	for range casRetries {
		if len(updates) == 0 {
			return nil
		}
		ids := make([]string, len(updates))
		for i, u := range updates {
			ids[i] = u.ID
		}
		got, err := s.st.Tasks.GetMany(r.Context(), ids)
		if err != nil {
			return err
		}
		var writes []api.Task
		var from []api.TaskStatusUpdate
		for _, u := range updates {
			t, ok := got[u.ID]
			if !ok {
				continue // removed meanwhile
			}
			if s.statusApplies(&t, nodeID, u) {
				writes, from = append(writes, t), append(from, u)
			}
		}
		done, err := s.st.Tasks.UpdateMany(r.Context(), writes)
		if err != nil {
			return err
		}
		updates = updates[:0]
		for i, ok := range done {
			if !ok {
				updates = append(updates, from[i])
			}
		}
	}
	if len(updates) == 0 {
		return nil
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "task " + updates[0].ID + " is being changed concurrently"}
}
