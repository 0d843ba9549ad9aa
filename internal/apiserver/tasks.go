package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// current reports whether a task belongs in a default listing: it is meant to
// run, or it has not yet reached an end state.
func current(t api.Task) bool {
	return t.DesiredState == api.TaskRunning || !t.Status.State.Terminal()
}

func sortTasks(ts []api.Task) {
	sort.Slice(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		if a.ServiceName != b.ServiceName {
			return a.ServiceName < b.ServiceName
		}
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		if a.NodeID != b.NodeID {
			return a.NodeID < b.NodeID
		}
		return a.CreatedAt.After(b.CreatedAt)
	})
}

func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid(name, "want true or false, got %q", v)
	}
	return b, nil
}

func (s *Server) serviceTasks(w http.ResponseWriter, r *http.Request) error {
	all, err := boolParam(r, "all")
	if err != nil {
		return err
	}
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	p, err := readPage(r, fmt.Sprintf("service-tasks %s %s %t", svc.Spec.Name, svc.ID, all))
	if err != nil {
		return err
	}
	tasks, rev, err := list(r.Context(), s.st.Tasks, p)
	if err != nil {
		return err
	}
	out := []api.Task{}
	for _, t := range tasks {
		if t.ServiceID == svc.ID && (all || current(t)) {
			out = append(out, t)
		}
	}
	sortTasks(out)
	writePage(w, p, rev, out)
	return nil
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	service, node := q.Get("service"), q.Get("node")
	all, err := boolParam(r, "all")
	if err != nil {
		return err
	}
	p, err := readPage(r, fmt.Sprintf("tasks %q %q %t", service, node, all))
	if err != nil {
		return err
	}
	tasks, rev, err := list(r.Context(), s.st.Tasks, p)
	if err != nil {
		return err
	}
	out := []api.Task{}
	for _, t := range tasks {
		if (service == "" || t.ServiceName == service) && (node == "" || t.NodeID == node) && (all || current(t)) {
			out = append(out, t)
		}
	}
	sortTasks(out)
	writePage(w, p, rev, out)
	return nil
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) error {
	t, err := s.st.Tasks.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no task with id %q", r.PathValue("id"))
	}
	if err != nil {
		return err
	}
	writeJSON(w, 200, t)
	return nil
}
