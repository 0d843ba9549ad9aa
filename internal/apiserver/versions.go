package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/ids"
	"github.com/berth-project/berth/internal/store"
)

// This file keeps the versions of services: every change of a spec is a new
// version, stored with the service in one transaction, and the API's
// rollback, promote and resume move an update from one state to the next.
// Progress of an update is the orchestrator's to write, never the API's.

// defaultAuthor is the author of versions while the API has one identity.
const defaultAuthor = "admin"

// Summary prefixes of rollback versions. The orchestrator's automatic
// rollback writes "automatic rollback of vN: why" (see ADR 0019).
const (
	rollbackSummaryPrefix     = "rollback to "
	autoRollbackSummaryPrefix = "automatic rollback"
)

// author is who made the request, for the version record.
func author(*http.Request) string { return defaultAuthor }

// changeKind says why a new version is written.
type changeKind int

const (
	kindDeploy   changeKind = iota // PUT of a spec, or a scale
	kindRollback                   // POST rollback
)

// newVersion is one new version of a service, ready to commit.
type newVersion struct {
	kind changeKind
	// old is the service as read (with its revision); nil to create one.
	old *api.Service
	// spec is the new spec, normalized and valid.
	spec api.ServiceSpec
	// summary prefixes the diff summary (e.g. "rollback to v3").
	summary string
	// meshRev, when not zero, is the revision the mesh clash check listed
	// the services at: the commit fails with ErrConflict if any service
	// changed since.
	meshRev int64
}

// updateTotal is how many tasks an update of svc must replace: the
// replica count, or for global and per-unit services the tasks now meant to
// run (the orchestrator corrects it when nodes come and go).
func (s *Server) updateTotal(ctx context.Context, svc api.Service) (int, error) {
	if svc.Spec.Mode == api.ModeReplicated || svc.Spec.Mode == "" {
		return svc.Spec.ReplicaCount(), nil
	}
	tasks, _, err := s.st.Tasks.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tasks {
		if t.ServiceID == svc.ID && t.DesiredState == api.TaskRunning {
			n++
		}
	}
	return n, nil
}

// commitVersion writes v in one transaction: the service, its version
// record, the pruning of versions beyond the history limit, and for a
// change of the task template the start of an update (or rollback). It
// returns the stored service; a store.ErrConflict or store.ErrExists means
// the caller should read again and retry.
func (s *Server) commitVersion(ctx context.Context, r *http.Request, v newVersion) (api.Service, error) {
	now := s.now().UTC()
	txn := s.st.Txn()
	var svc api.Service
	rec := api.ServiceVersion{Spec: v.spec, CreatedAt: now, Author: author(r)}
	if v.old == nil {
		svc = api.Service{ID: ids.New(), Spec: v.spec, Version: 1, CreatedAt: now, UpdatedAt: now}
		rec.Summary = "created"
		s.st.Services.TxnCreate(txn, &svc)
		// Versions left by an earlier service of the same name (removed
		// by an older server) must not show in this one's history.
		stale, _, err := s.st.Versions.ListPrefix(ctx, store.VersionPrefix(v.spec.Name))
		if err != nil {
			return svc, err
		}
		for _, o := range stale {
			if o.Version != 1 {
				s.st.Versions.TxnDelete(txn, store.VersionKey(o.Service, o.Version), 0)
			}
		}
	} else {
		svc = *v.old
		prev := v.old.Spec
		svc.Spec = v.spec
		svc.Version++
		svc.UpdatedAt = now
		templateChanged := prev.TemplateKey() != v.spec.TemplateKey()
		// A change that replaces no task (a scale, a label) during an
		// update keeps PreviousSpec: it stays the target of the automatic
		// rollback of that update.
		if templateChanged || v.kind == kindRollback || !v.old.UpdateStatus.InFlight() {
			svc.PreviousSpec = &prev
		}
		state := ""
		switch {
		case v.kind == kindRollback && (templateChanged || v.old.UpdateStatus.InFlight()):
			state = api.UpdateRollingBack
		case v.kind == kindDeploy && templateChanged:
			state = api.UpdateUpdating
		}
		if state != "" {
			total, err := s.updateTotal(ctx, svc)
			if err != nil {
				return svc, err
			}
			svc.UpdateStatus = &api.UpdateStatus{State: state, FromVersion: v.old.Version, ToVersion: svc.Version,
				StartedAt: now, Total: total, Rollback: state == api.UpdateRollingBack}
		}
		rec.Summary = summarize(prev, v.spec)
		s.st.Services.TxnUpdate(txn, &svc)
		if err := s.pruneVersions(ctx, txn, svc.Spec.Name, svc.Version); err != nil {
			return svc, err
		}
	}
	if v.summary != "" {
		rec.Summary = v.summary + ": " + rec.Summary
	}
	rec.Service, rec.Version = svc.Spec.Name, svc.Version
	s.st.Versions.TxnPut(txn, &rec)
	if v.meshRev != 0 {
		s.st.Services.TxnUnchangedSince(txn, v.meshRev)
	}
	if err := txn.Commit(ctx); err != nil {
		return svc, err
	}
	return svc, nil
}

// historyLimit is how many versions of a service are kept.
func (s *Server) historyLimit() int {
	if s.cfg.VersionHistory > 0 {
		return s.cfg.VersionHistory
	}
	return api.DefaultVersionHistory
}

// pruneVersions adds to txn the removal of the oldest versions of service,
// so that with version next (being added) at most historyLimit remain.
// Records at or past next, which only an interrupted history can leave,
// are replaced (next) or removed.
func (s *Server) pruneVersions(ctx context.Context, txn *store.Txn, service string, next uint64) error {
	all, _, err := s.st.Versions.ListPrefix(ctx, store.VersionPrefix(service))
	if err != nil {
		return err
	}
	var kept []api.ServiceVersion
	for _, v := range all {
		switch {
		case v.Version > next:
			s.st.Versions.TxnDelete(txn, store.VersionKey(v.Service, v.Version), v.Revision)
		case v.Version < next:
			kept = append(kept, v)
		}
	}
	// ListPrefix is in key order, which is version order (VersionKey).
	for i := 0; i < len(kept)+1-s.historyLimit(); i++ {
		s.st.Versions.TxnDelete(txn, store.VersionKey(kept[i].Service, kept[i].Version), kept[i].Revision)
	}
	return nil
}

// listVersions answers GET /services/{name}/versions: the kept versions,
// newest first.
func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	vs, _, err := s.st.Versions.ListPrefix(r.Context(), store.VersionPrefix(svc.Spec.Name))
	if err != nil {
		return err
	}
	out := make([]api.ServiceVersion, 0, len(vs))
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Version <= svc.Version { // never a record from the future
			out = append(out, vs[i])
		}
	}
	writeJSON(w, 200, out)
	return nil
}

// rollbackService answers POST /services/{name}/rollback: the spec of a
// kept version (default: the previous spec) becomes a new version, and the
// tasks roll back to it under the rollback: policy.
func (s *Server) rollbackService(w http.ResponseWriter, r *http.Request) error {
	var req api.RollbackRequest
	if err := readOptionalJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	for range casRetries {
		svc, err := s.lookupService(r)
		if err != nil {
			return err
		}
		name := svc.Spec.Name
		var target api.ServiceSpec
		label := ""
		if req.To == 0 {
			if svc.PreviousSpec == nil {
				return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
					Message: fmt.Sprintf("service %s has no previous version to roll back to (it is at version %d)", name, svc.Version)}
			}
			target = *svc.PreviousSpec
			label = "rollback to the previous spec"
			if n, ok := s.versionOf(ctx, svc, target); ok {
				label = rollbackSummaryPrefix + "v" + strconv.FormatUint(n, 10)
			}
		} else {
			if req.To >= svc.Version {
				if req.To == svc.Version {
					return &api.Error{Code: api.CodeInvalid, Status: http.StatusBadRequest, Field: "to",
						Message: fmt.Sprintf("version %d is the current version of service %s", req.To, name)}
				}
				return s.versionNotKept(ctx, svc, req.To)
			}
			rec, err := s.st.Versions.Get(ctx, store.VersionKey(name, req.To))
			if errors.Is(err, store.ErrNotFound) {
				return s.versionNotKept(ctx, svc, req.To)
			}
			if err != nil {
				return err
			}
			target = rec.Spec
			label = rollbackSummaryPrefix + "v" + strconv.FormatUint(req.To, 10)
		}
		target.Name = name
		target.Normalize()
		if err := target.Validate(); err != nil {
			return fmt.Errorf("the spec to roll back to is not valid any more: %w", err)
		}
		if specEqual(target, svc.Spec) && !svc.UpdateStatus.InFlight() {
			return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
				Message: fmt.Sprintf("service %s already runs that spec (version %d): nothing to roll back", name, svc.Version)}
		}
		meshRev, err := s.checkMeshClash(ctx, target)
		if err != nil {
			return err
		}
		out, err := s.commitVersion(ctx, r, newVersion{kind: kindRollback, old: &svc, spec: target, summary: label, meshRev: meshRev})
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("service rolled back", "service", name, "version", out.Version, "what", label)
		writeJSON(w, 200, out)
		return nil
	}
	return busy(r.PathValue("name"))
}

// versionOf finds the newest kept version before the current one whose spec
// is spec.
func (s *Server) versionOf(ctx context.Context, svc api.Service, spec api.ServiceSpec) (uint64, bool) {
	vs, _, err := s.st.Versions.ListPrefix(ctx, store.VersionPrefix(svc.Spec.Name))
	if err != nil {
		return 0, false
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Version < svc.Version && specEqual(vs[i].Spec, spec) {
			return vs[i].Version, true
		}
	}
	return 0, false
}

// versionNotKept is the 404 for a rollback to a version that is not kept,
// naming the versions that are.
func (s *Server) versionNotKept(ctx context.Context, svc api.Service, to uint64) error {
	vs, _, err := s.st.Versions.ListPrefix(ctx, store.VersionPrefix(svc.Spec.Name))
	if err != nil {
		return err
	}
	var kept []string
	for _, v := range vs {
		if v.Version < svc.Version {
			kept = append(kept, strconv.FormatUint(v.Version, 10))
		}
	}
	msg := fmt.Sprintf("service %s has no version %d", svc.Spec.Name, to)
	if to < svc.Version {
		msg = fmt.Sprintf("version %d of service %s is not kept (only the last %d versions are)", to, svc.Spec.Name, s.historyLimit())
	}
	if len(kept) == 0 {
		msg += "; no earlier version is kept"
	} else {
		msg += "; versions you can roll back to: " + strings.Join(kept, ", ")
	}
	return &api.Error{Code: api.CodeNotFound, Status: http.StatusNotFound, Field: "to", Message: msg}
}

// promoteService answers POST /services/{name}/promote: canaries waiting
// for promotion let the update carry on, and the update is marked promoted
// so that it never holds at its canaries again.
func (s *Server) promoteService(w http.ResponseWriter, r *http.Request) error {
	return s.moveUpdate(w, r, "promoted", func(svc *api.Service) error {
		st := svc.UpdateStatus
		if st == nil || st.State != api.UpdateCanary {
			return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
				Message: fmt.Sprintf("service %s has no canaries waiting (update state: %s)", svc.Spec.Name, stateOf(st))}
		}
		st.State, st.Promoted = api.UpdateUpdating, true
		return nil
	})
}

// resumeService answers POST /services/{name}/resume: a paused update
// carries on; a paused rollback carries on as a rollback; an update paused
// while holding at canaries not yet promoted holds at them again (the
// orchestrator retries a failed canary and waits for a promotion).
func (s *Server) resumeService(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	return s.moveUpdate(w, r, "resumed", func(svc *api.Service) error {
		st := svc.UpdateStatus
		if st == nil || st.State != api.UpdatePaused {
			return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
				Message: fmt.Sprintf("service %s has no paused update to resume (update state: %s)", svc.Spec.Name, stateOf(st))}
		}
		rb := st.Rollback
		if !rb {
			var err error
			if rb, err = s.isRollback(ctx, *svc); err != nil {
				return err
			}
		}
		switch {
		case rb:
			st.State, st.Rollback = api.UpdateRollingBack, true
		case !st.Promoted && canaries(svc.Spec) > 0:
			st.State = api.UpdateCanary
		default:
			st.State = api.UpdateUpdating
		}
		st.Message = ""
		st.CompletedAt = time.Time{}
		return nil
	})
}

// canaries is how many canaries an update of spec runs.
func canaries(spec api.ServiceSpec) int {
	if spec.Update == nil || (spec.Mode != api.ModeReplicated && spec.Mode != "") {
		return 0
	}
	return spec.Update.Canary
}

// isRollback reports whether the update of svc, whose status does not say
// it is a rollback, is one anyway: a status written before the Rollback flag
// existed. Its target version was written by a rollback (manual or
// automatic), as its version record's summary says; an update status whose
// versions go backwards counts too.
func (s *Server) isRollback(ctx context.Context, svc api.Service) (bool, error) {
	st := svc.UpdateStatus
	if st.FromVersion > st.ToVersion {
		return true, nil
	}
	rec, err := s.st.Versions.Get(ctx, store.VersionKey(svc.Spec.Name, st.ToVersion))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return strings.HasPrefix(rec.Summary, rollbackSummaryPrefix) || strings.HasPrefix(rec.Summary, "rollback ") ||
		strings.HasPrefix(rec.Summary, autoRollbackSummaryPrefix), nil
}

// moveUpdate applies change to the service's update status with
// compare-and-swap, retrying on conflict. The spec and version stay.
func (s *Server) moveUpdate(w http.ResponseWriter, r *http.Request, what string, change func(*api.Service) error) error {
	for range casRetries {
		svc, err := s.lookupService(r)
		if err != nil {
			return err
		}
		if svc.UpdateStatus != nil {
			st := *svc.UpdateStatus
			svc.UpdateStatus = &st
		}
		if err := change(&svc); err != nil {
			return err
		}
		err = s.st.Services.Update(r.Context(), &svc)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("update "+what, "service", svc.Spec.Name, "version", svc.Version, "state", svc.UpdateStatus.State)
		writeJSON(w, 200, svc)
		return nil
	}
	return busy(r.PathValue("name"))
}

func stateOf(st *api.UpdateStatus) string {
	if st == nil {
		return "no update yet"
	}
	return st.State
}

func busy(name string) error {
	return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
		Message: "service " + name + " is being changed concurrently; try again"}
}

// readOptionalJSON decodes a JSON body strictly into v; an empty body
// leaves v as it is.
func readOptionalJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return api.DecodeStrict(b, v)
}

// summarize says in one line what changed from spec a to spec b, such as
// "image a → b, replicas 3 → 4, env +FOO".
func summarize(a, b api.ServiceSpec) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	short := func(s string) string {
		if r := []rune(s); len(r) > 40 {
			return string(r[:39]) + "…"
		}
		return s
	}
	if a.Task.Image != b.Task.Image {
		add("image %s → %s", short(valueOrNone(a.Task.Image)), short(valueOrNone(b.Task.Image)))
	}
	if !reflect.DeepEqual(a.Task.Command, b.Task.Command) && !(len(a.Task.Command) == 0 && len(b.Task.Command) == 0) {
		ctx, from, to := wordDiff(a.Task.Command, b.Task.Command)
		add("command %s%s → %s", ctx, short(valueOrNone(from)), short(valueOrNone(to)))
	}
	if a.Mode != b.Mode {
		add("mode %s → %s", valueOrNone(a.Mode), valueOrNone(b.Mode))
	}
	if ra, rb := replicas(a), replicas(b); ra != rb {
		add("replicas %s → %s", ra, rb)
	}
	if d := mapDiff(a.Task.Env, b.Task.Env); d != "" {
		add("env %s", d)
	}
	if d := mapDiff(a.Labels, b.Labels); d != "" {
		add("labels %s", d)
	}
	// Everything else by name: the task fields, then the service fields.
	ta, tb := jsonFields(a.Task), jsonFields(b.Task)
	for _, k := range changedKeys(ta, tb, "image", "command", "env") {
		add("%s changed", k)
	}
	sa, sb := jsonFields(a), jsonFields(b)
	for _, k := range changedKeys(sa, sb, "name", "task", "mode", "replicas", "labels") {
		add("%s changed", k)
	}
	if len(parts) == 0 {
		return "no change"
	}
	return strings.Join(parts, ", ")
}

// wordDiff returns the words of a and b that differ, without the words they
// share at both ends, and the shared word just before the difference as
// context ("…--version-label "), so that "command …--version-label v1 → v2"
// says what changed in a long command.
func wordDiff(a, b []string) (ctx, from, to string) {
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	if p > 0 {
		ctx = "…" + a[p-1] + " "
	}
	return ctx, strings.Join(a[p:len(a)-s], " "), strings.Join(b[p:len(b)-s], " ")
}

func valueOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func replicas(s api.ServiceSpec) string {
	if s.Replicas == nil {
		return "(unset)"
	}
	return strconv.Itoa(*s.Replicas)
}

// mapDiff lists added (+K), removed (-K) and changed (~K) keys, sorted.
func mapDiff(a, b map[string]string) string {
	var out []string
	for k, v := range b {
		if old, ok := a[k]; !ok {
			out = append(out, "+"+k)
		} else if old != v {
			out = append(out, "~"+k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, "-"+k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][1:] < out[j][1:] })
	return strings.Join(out, " ")
}

// jsonFields is v's JSON object as raw members.
func jsonFields(v any) map[string]json.RawMessage {
	b, _ := json.Marshal(v)
	m := map[string]json.RawMessage{}
	_ = json.Unmarshal(b, &m)
	return m
}

// changedKeys lists the members that differ between a and b, sorted, but
// for those in skip.
func changedKeys(a, b map[string]json.RawMessage, skip ...string) []string {
	seen := map[string]bool{}
	for _, k := range skip {
		seen[k] = true
	}
	var out []string
	for _, m := range []map[string]json.RawMessage{a, b} {
		for k := range m {
			if seen[k] {
				continue
			}
			seen[k] = true
			if string(a[k]) != string(b[k]) {
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}
