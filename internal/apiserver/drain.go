package apiserver

import (
	"net/http"
	"slices"
	"sort"
	"strconv"

	"github.com/berth-project/berth/api"
)

// drained answers whether every gateway of the cluster has stopped sending
// task new traffic: each ready node whose agent runs a gateway has applied
// a routing state at or after the revision asked about (the agent passes
// the revision of the task's desired shutdown) and has nothing in flight to
// the task. The agent stopping the task polls it before signalling the task.
func (s *Server) drained(w http.ResponseWriter, r *http.Request) error {
	task := r.PathValue("task")
	rev, err := strconv.ParseInt(r.URL.Query().Get("revision"), 10, 64)
	if err != nil || rev < 0 {
		return invalid("revision", "must be a store revision (a non-negative integer)")
	}
	nodes, _, err := s.st.Nodes.List(r.Context())
	if err != nil {
		return err
	}
	out := api.DrainStatus{Drained: true}
	for _, n := range nodes {
		if n.Status != api.NodeReady || n.Gateway == nil {
			continue // a down node's gateway serves nobody; a node without one never routed
		}
		if n.Gateway.Revision < rev || slices.Contains(n.Gateway.Draining, task) {
			out.Drained = false
			out.Waiting = append(out.Waiting, n.ID)
		}
	}
	sort.Strings(out.Waiting)
	writeJSON(w, http.StatusOK, out)
	return nil
}
