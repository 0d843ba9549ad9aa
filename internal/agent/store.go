package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// validID matches the task ids the agent accepts. Ids become file names, so
// anything that could walk out of a directory is refused.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func validTaskID(id string) bool { return validID.MatchString(id) }

// taskRecord is what the agent keeps on disk about one task: enough to
// re-attach to it after a restart, or to report how it ended.
type taskRecord struct {
	Task api.Task `json:"task"`
	// Driver is the driver's handle; nil until the driver started the task.
	Driver *driver.State `json:"driver,omitempty"`
	// Status is the last observed status. A terminal status here means the
	// task ended but the manager has not been told yet.
	Status api.TaskStatus `json:"status"`
}

// tombstone remembers a task that ended and was reported, so its logs stay
// readable and a stale assignment set does not start it again.
type tombstone struct {
	Driver string    `json:"driver"`
	Ended  time.Time `json:"ended"`
}

// store is the agent's directory: DataDir/agent.
type store struct {
	dir string
}

func (s *store) tasksDir() string { return filepath.Join(s.dir, "tasks") }
func (s *store) endedDir() string { return filepath.Join(s.dir, "ended") }
func (s *store) logsDir() string  { return filepath.Join(s.dir, "logs") }

func (s *store) init() error {
	for _, d := range []string{s.dir, s.tasksDir(), s.endedDir(), s.logsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("agent: create %s: %w", d, err)
		}
	}
	// Temporary files of writes a crash interrupted.
	for _, d := range []string{s.dir, s.tasksDir(), s.endedDir()} {
		tmps, _ := filepath.Glob(filepath.Join(d, ".*.tmp*"))
		for _, p := range tmps {
			_ = os.Remove(p)
		}
	}
	return nil
}

func (s *store) readNodeID() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "node-id"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("agent: read node id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (s *store) writeNodeID(id string) error {
	return writeFileAtomic(filepath.Join(s.dir, "node-id"), []byte(id+"\n"))
}

func (s *store) saveTask(rec taskRecord) error {
	if !validTaskID(rec.Task.ID) {
		return fmt.Errorf("agent: save task: invalid task id %q", rec.Task.ID)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("agent: save task %s: %w", rec.Task.ID, err)
	}
	return writeFileAtomic(filepath.Join(s.tasksDir(), rec.Task.ID+".json"), b)
}

func (s *store) removeTask(id string) error {
	if !validTaskID(id) {
		return nil
	}
	err := os.Remove(filepath.Join(s.tasksDir(), id+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agent: remove task state: %w", err)
	}
	return nil
}

// loadTasks reads every saved task. Files that cannot be read are returned as
// errors and skipped; the caller decides what to log.
func (s *store) loadTasks() ([]taskRecord, []error) {
	ents, err := os.ReadDir(s.tasksDir())
	if err != nil {
		return nil, []error{fmt.Errorf("agent: list saved tasks: %w", err)}
	}
	var recs []taskRecord
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue // temp files of an interrupted write, or foreign files
		}
		p := filepath.Join(s.tasksDir(), name)
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("agent: read %s: %w", p, err))
			continue
		}
		var rec taskRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			errs = append(errs, fmt.Errorf("agent: parse %s: %w", p, err))
			continue
		}
		if rec.Task.ID+".json" != name {
			errs = append(errs, fmt.Errorf("agent: %s holds task %q", p, rec.Task.ID))
			continue
		}
		recs = append(recs, rec)
	}
	return recs, errs
}

func (s *store) saveTombstone(id string, t tombstone) error {
	if !validTaskID(id) {
		return nil
	}
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("agent: save tombstone: %w", err)
	}
	return writeFileAtomic(filepath.Join(s.endedDir(), id+".json"), b)
}

func (s *store) removeTombstone(id string) error {
	if !validTaskID(id) {
		return nil
	}
	err := os.Remove(filepath.Join(s.endedDir(), id+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agent: remove tombstone: %w", err)
	}
	return nil
}

func (s *store) loadTombstones() (map[string]tombstone, error) {
	out := map[string]tombstone{}
	ents, err := os.ReadDir(s.endedDir())
	if err != nil {
		return out, fmt.Errorf("agent: list tombstones: %w", err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validTaskID(id) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.endedDir(), e.Name()))
		if err != nil {
			continue
		}
		var t tombstone
		if json.Unmarshal(b, &t) == nil {
			out[id] = t
		}
	}
	return out, nil
}

// removeTaskLogs deletes the entries of the log directory that belong to a
// task: by convention drivers name them after the task id ("<id>.log",
// "<id>/", "<id>.1.log"). Short ids are left alone: a prefix that short could
// match another task's files.
func (s *store) removeTaskLogs(id string) {
	if !validTaskID(id) || len(id) < 8 {
		return
	}
	ents, err := os.ReadDir(s.logsDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if n == id || strings.HasPrefix(n, id+".") {
			_ = os.RemoveAll(filepath.Join(s.logsDir(), n))
		}
	}
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: write a temporary file, fsync it, rename it over
// path, fsync the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("agent: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("agent: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("agent: rename %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
