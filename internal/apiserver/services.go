package apiserver

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// casRetries bounds how often a read-modify-write is retried on conflict.
const casRetries = 8

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) error {
	p, err := readPage(r, "services")
	if err != nil {
		return err
	}
	svcs, rev, err := list(r.Context(), s.st.Services, p)
	if err != nil {
		return err
	}
	if svcs == nil {
		svcs = []api.Service{}
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Spec.Name < svcs[j].Spec.Name })
	if err := s.withMeshErrors(r, svcs); err != nil {
		return err
	}
	writePage(w, p, rev, svcs)
	return nil
}

// withMeshErrors sets each service's MeshErrors from what the ready nodes'
// gateways last reported refusing.
func (s *Server) withMeshErrors(r *http.Request, svcs []api.Service) error {
	nodes, _, err := s.st.Nodes.List(r.Context())
	if err != nil {
		return err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Hostname < nodes[j].Hostname })
	byService := map[string][]api.MeshError{}
	for _, n := range nodes {
		if n.Status != api.NodeReady || n.Gateway == nil {
			continue
		}
		for _, ref := range n.Gateway.Refused {
			byService[ref.Service] = append(byService[ref.Service], api.MeshError{Node: n.Hostname, Error: ref.Error})
		}
	}
	for i := range svcs {
		svcs[i].MeshErrors = byService[svcs[i].Spec.Name]
	}
	return nil
}

func (s *Server) lookupService(r *http.Request) (api.Service, error) {
	name := r.PathValue("name")
	svc, err := s.st.Services.Get(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return svc, notFound("no service named %q", name)
	}
	return svc, err
}

func (s *Server) getService(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	one := []api.Service{svc}
	if err := s.withMeshErrors(r, one); err != nil {
		return err
	}
	writeJSON(w, 200, one[0])
	return nil
}

// putService creates or updates a service from a spec document. Deploying an
// unchanged spec changes nothing and keeps the version.
func (s *Server) putService(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "", "application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/plain":
	default:
		return &api.Error{Code: api.CodeUnsupported, Status: http.StatusUnsupportedMediaType,
			Message: "content type " + ct + " is not supported: send application/json or application/yaml"}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	spec, err := api.ParseServiceSpec(body)
	if err != nil {
		return err
	}
	if spec.Name == "" {
		spec.Name = name
	}
	if spec.Name != name {
		return invalid("name", "%q does not match the service in the URL (%q)", spec.Name, name)
	}
	spec.Normalize()
	if err := spec.Validate(); err != nil {
		return err
	}
	warnings := spec.Warnings()
	if err := s.checkBerthPorts(r.Context(), spec); err != nil {
		return err
	}
	dryRun, err := boolParam(r, "dry_run")
	if err != nil {
		return err
	}
	if dryRun {
		return s.planDeploy(w, r, spec, warnings)
	}
	for range casRetries {
		// The clash check and the write are one step: the write fails if
		// any service changed since the check listed them (a second deploy
		// claiming the same port), and both run again.
		meshRev, err := s.checkMeshClash(r.Context(), spec)
		if err != nil {
			return err
		}
		svc, created, changed, err := s.writeSpec(r, spec, meshRev)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			return err
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		if created || changed {
			s.log.Info("service deployed", "service", name, "version", svc.Version, "created", created)
		}
		for _, w8 := range warnings {
			w.Header().Add("Warning", warningHeader(w8))
		}
		writeJSON(w, status, api.DeployResult{Service: svc, Warnings: warnings})
		return nil
	}
	return busy(name)
}

// warningHeader formats a warning as an HTTP Warning header value (RFC 7234
// warn-code 299, "miscellaneous persistent warning").
func warningHeader(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return ' '
		}
		return r
	}, msg)
	return `299 berth "` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(msg) + `"`
}

// writeSpec stores spec as a new version of its service, or creates the
// service. An unchanged spec writes nothing. meshRev guards the write as
// commitVersion says.
func (s *Server) writeSpec(r *http.Request, spec api.ServiceSpec, meshRev int64) (svc api.Service, created, changed bool, err error) {
	ctx := r.Context()
	svc, err = s.st.Services.Get(ctx, spec.Name)
	if errors.Is(err, store.ErrNotFound) {
		svc, err = s.commitVersion(ctx, r, newVersion{kind: kindDeploy, spec: spec, meshRev: meshRev})
		return svc, true, true, err
	}
	if err != nil {
		return svc, false, false, err
	}
	if spec.Task.ForceUpdate == 0 {
		// A spec file knows nothing of restarts: deploying it again must
		// not undo one (and replace every task a second time).
		spec.Task.ForceUpdate = svc.Spec.Task.ForceUpdate
	}
	if specEqual(svc.Spec, spec) {
		return svc, false, false, nil
	}
	svc, err = s.commitVersion(ctx, r, newVersion{kind: kindDeploy, old: &svc, spec: spec, meshRev: meshRev})
	return svc, false, true, err
}

// specEqual compares specs by their JSON form, so that nil and empty maps
// and lists count as the same.
func specEqual(a, b api.ServiceSpec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}

// ScaleRequest is the body of POST /services/{name}/scale.
type ScaleRequest struct {
	// Replicas is the new replica count (0 to 100000).
	Replicas *int `json:"replicas"`
}

func (s *Server) scaleService(w http.ResponseWriter, r *http.Request) error {
	var req ScaleRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	switch {
	case req.Replicas == nil:
		return invalid("replicas", "is required")
	case *req.Replicas < 0:
		return invalid("replicas", "must not be negative (got %d)", *req.Replicas)
	case *req.Replicas > api.MaxReplicas:
		return invalid("replicas", "%d is over the limit of %d", *req.Replicas, api.MaxReplicas)
	}
	for range casRetries {
		svc, err := s.lookupService(r)
		if err != nil {
			return err
		}
		if svc.Spec.Mode == api.ModeGlobal {
			return invalid("replicas", "service %s is global: it runs one task on every eligible node and cannot be scaled", svc.Spec.Name)
		}
		if svc.Spec.Replicas != nil && *svc.Spec.Replicas == *req.Replicas {
			writeJSON(w, 200, svc)
			return nil
		}
		n := *req.Replicas
		spec := svc.Spec
		spec.Replicas = &n
		svc, err = s.commitVersion(r.Context(), r, newVersion{kind: kindDeploy, old: &svc, spec: spec})
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("service scaled", "service", svc.Spec.Name, "replicas", n)
		writeJSON(w, 200, svc)
		return nil
	}
	return busy(r.PathValue("name"))
}

func (s *Server) deleteService(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	// The orchestrator sees the service gone and shuts its tasks down. Its
	// versions go with it, so that a new service of the same name starts
	// a history of its own.
	txn := s.st.Txn()
	s.st.Services.TxnDelete(txn, svc.Spec.Name, 0)
	s.st.Versions.TxnDeletePrefix(txn, store.VersionPrefix(svc.Spec.Name))
	if err := txn.Commit(r.Context()); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	s.log.Info("service removed", "service", svc.Spec.Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
