package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// MaxSpecBytes is the largest spec document Berth reads.
const MaxSpecBytes = 1 << 20

// Limits on spec values, so that one spec cannot exhaust a node or the store.
const (
	MaxReplicas    = 100000
	MaxPorts       = 64
	MaxCommandArgs = 1024
	MaxEnv         = 1024
	MaxLabels      = 256
	MaxConstraints = 64
)

// MaxStopGracePeriod caps task.stop_grace_period. A stop waits for it (and
// a drain may wait as long), so an absurd value would pin a node's slot and
// an update for ever; an hour covers the slowest clean shutdown we know of
// (a database flushing), where Nomad's default cap is 30s.
const MaxStopGracePeriod = time.Hour

// Spec defaults.
const (
	DefaultStopGracePeriod = 10 * time.Second
	DefaultHealthInterval  = 5 * time.Second
	DefaultHealthRetries   = 3
	DefaultRestartDelay    = time.Second
	DefaultRestartMaxDelay = 30 * time.Second
)

var (
	dnsLabel  = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	envName   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userSpec  = regexp.MustCompile(`^([a-z_][a-z0-9_.-]*\$?|[0-9]+)(:([a-z_][a-z0-9_.-]*|[0-9]+))?$`)
	labelKey  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	envVarRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// ParseServiceSpec reads a spec in YAML or JSON, rejecting unknown fields and
// values of the wrong type with an error that names the field path. It does
// not apply defaults or validate; see Validate.
func ParseServiceSpec(data []byte) (ServiceSpec, error) {
	var spec ServiceSpec
	if len(data) > MaxSpecBytes {
		return spec, Invalid("", "spec is %d bytes; the limit is %d", len(data), MaxSpecBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return spec, Invalid("", "spec is empty")
	}
	if n := countDocuments(data); n > 1 {
		return spec, Invalid("", "the document holds %d YAML documents; put one service in each file", n)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return spec, Invalid("", "not valid YAML or JSON: %s", oneLine(err.Error()))
	}
	if err := DecodeStrict(js, &spec); err != nil {
		return spec, err
	}
	return spec, nil
}

// countDocuments counts the YAML documents in data that hold anything but
// comments: "---" lines separate them.
func countDocuments(data []byte) int {
	n, content := 0, false
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t == "---" || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "---#") {
			if content {
				n++
			}
			content = strings.TrimSpace(strings.TrimPrefix(t, "---")) != "" && !strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(t, "---")), "#")
			continue
		}
		if t == "..." {
			continue
		}
		if t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
	}
	if content {
		n++
	}
	return n
}

// DecodeStrict decodes JSON into v (a pointer), rejecting unknown fields and
// wrong types with a *FieldError naming the path of the offending field.
func DecodeStrict(js []byte, v any) error {
	var generic any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return Invalid("", "not valid JSON: %s", oneLine(err.Error()))
	}
	if dec.More() {
		return Invalid("", "more than one document")
	}
	rt := reflect.TypeOf(v).Elem()
	if err := checkShape(generic, rt, ""); err != nil {
		return err
	}
	if err := json.Unmarshal(js, v); err != nil {
		// checkShape should have caught it; report without a field.
		return Invalid("", "%s", oneLine(err.Error()))
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// checkShape walks a decoded JSON value against a Go type and reports the
// first unknown field or wrong type, with its path.
func checkShape(v any, t reflect.Type, at string) error {
	if v == nil {
		return nil // null is the zero value
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		b, _ := json.Marshal(v)
		if err := json.Unmarshal(b, reflect.New(t).Interface()); err != nil {
			return Invalid(at, "%s", oneLine(err.Error()))
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkShape(v, t.Elem(), at)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return Invalid(at, "want an object, got %s", jsonKind(v))
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				return Invalid(join(at, k), "unknown field %q%s", k, suggest(k, fields))
			}
			if err := checkShape(m[k], f.Type, join(at, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return Invalid(at, "want an object, got %s", jsonKind(v))
		}
		for k, e := range m {
			if err := checkShape(e, t.Elem(), join(at, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice, reflect.Array:
		l, ok := v.([]any)
		if !ok {
			return Invalid(at, "want a list, got %s", jsonKind(v))
		}
		if t.Kind() == reflect.Array && len(l) != t.Len() {
			return Invalid(at, "want a list of %d, got %d", t.Len(), len(l))
		}
		for i, e := range l {
			if err := checkShape(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if _, ok := v.(string); !ok {
			return Invalid(at, "want a string, got %s", jsonKind(v))
		}
		return nil
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return Invalid(at, "want true or false, got %s", jsonKind(v))
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return Invalid(at, "want a whole number, got %s", jsonKind(v))
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
			return Invalid(at, "want a whole number, got %s", truncate(n.String()))
		}
		if err := json.Unmarshal([]byte(n.String()), reflect.New(t).Interface()); err != nil {
			return Invalid(at, "number %s is out of range", truncate(n.String()))
		}
		return nil
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return Invalid(at, "want a number, got %s", jsonKind(v))
		}
		f, err := n.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return Invalid(at, "want a finite number, got %s", truncate(n.String()))
		}
		return nil
	case reflect.Interface:
		return nil
	}
	return Invalid(at, "unsupported type")
}

type jsonField struct{ Type reflect.Type }

func jsonFields(t reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = jsonField{Type: f.Type}
	}
	return out
}

func suggest(k string, fields map[string]jsonField) string {
	lk := strings.ToLower(strings.ReplaceAll(k, "-", "_"))
	names := make([]string, 0, len(fields))
	for name := range fields {
		if strings.ToLower(name) == lk {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
		names = append(names, name)
	}
	if s := Suggest(lk, names); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func jsonKind(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", truncate(x))
	case json.Number:
		return "number " + truncate(x.String())
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return "null"
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// ValidationErrors lists every problem found in a spec. The first is the one
// an API error reports as its field.
type ValidationErrors []*FieldError

func (v ValidationErrors) Error() string {
	parts := make([]string, len(v))
	for i, e := range v {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap lets errors.As find the first FieldError.
func (v ValidationErrors) Unwrap() []error {
	out := make([]error, len(v))
	for i, e := range v {
		out[i] = e
	}
	return out
}

// ReplicaCount returns the number of replicas a replicated spec asks for
// (default 1).
func (s ServiceSpec) ReplicaCount() int {
	if s.Replicas == nil {
		return 1
	}
	return *s.Replicas
}

// Normalize fills in defaults. It is idempotent and does not validate.
func (s *ServiceSpec) Normalize() {
	if s.Mode == "" {
		s.Mode = ModeReplicated
	}
	if s.Mode == ModeReplicated && s.Replicas == nil {
		one := 1
		s.Replicas = &one
	}
	s.normalizeMesh()
	s.normalizeUpdate()
	t := &s.Task
	if t.Driver == "" {
		t.Driver = DriverProcess
	}
	if t.StopGracePeriod == 0 {
		t.StopGracePeriod = Duration(DefaultStopGracePeriod)
	}
	if t.Driver == DriverDocker {
		if t.Pull == "" {
			t.Pull = PullIfNotPresent
		}
		if t.ReadOnly == nil {
			yes := true
			t.ReadOnly = &yes
		}
	}
	for i := range t.Ports {
		if t.Ports[i].Protocol == "" {
			t.Ports[i].Protocol = "tcp"
		}
	}
	if h := t.Health; h != nil {
		if h.Interval == 0 {
			h.Interval = Duration(DefaultHealthInterval)
		}
		if h.Timeout == 0 {
			h.Timeout = h.Interval
			if h.Timeout.D() > 10*time.Second {
				h.Timeout = Duration(10 * time.Second)
			}
		}
		if h.Retries == 0 {
			h.Retries = DefaultHealthRetries
		}
		if h.HTTP != nil && h.HTTP.Path == "" {
			h.HTTP.Path = "/"
		}
	}
	r := &s.Restart
	if r.Condition == "" {
		r.Condition = RestartAny
	}
	if r.Delay == 0 {
		r.Delay = Duration(DefaultRestartDelay)
	}
	if r.MaxDelay == 0 {
		r.MaxDelay = Duration(DefaultRestartMaxDelay)
		if r.MaxDelay < r.Delay {
			r.MaxDelay = r.Delay
		}
	}
}

// Validate checks a normalized spec and returns ValidationErrors, or nil.
func (s *ServiceSpec) Validate() error {
	var errs ValidationErrors
	add := func(field, format string, args ...any) { errs = append(errs, Invalid(field, format, args...)) }

	switch {
	case s.Name == "":
		add("name", "is required")
	case len(s.Name) > 63 || !dnsLabel.MatchString(s.Name):
		add("name", "%q is not a valid name: use at most 63 lower-case letters, digits and '-', starting with a letter and not ending with '-'", truncate(s.Name))
	}
	validateLabels(s.Labels, "labels", add)
	switch s.Mode {
	case ModeReplicated:
		if n := s.ReplicaCount(); n < 0 {
			add("replicas", "must not be negative (got %d)", n)
		} else if n > MaxReplicas {
			add("replicas", "%d is over the limit of %d", n, MaxReplicas)
		}
	case ModeGlobal:
		if s.Replicas != nil {
			add("replicas", "is not allowed with mode global (one task runs on every eligible node)")
		}
	case ModePerUnit:
		if s.Replicas != nil {
			if n := *s.Replicas; n < 0 {
				add("replicas", "must not be negative (got %d)", n)
			} else if n > MaxReplicas {
				add("replicas", "%d is over the limit of %d", n, MaxReplicas)
			}
		}
	default:
		add("mode", "unknown mode %q: use replicated, global or per-unit", truncate(s.Mode))
	}
	switch {
	case s.Unit == "" && s.Mode == ModePerUnit:
		add("unit", "is required with mode per-unit: use %s", strings.Join(UnitKinds, ", "))
	case s.Unit != "" && !slices.Contains(UnitKinds, s.Unit):
		add("unit", "unknown unit %q: use %s", truncate(s.Unit), strings.Join(UnitKinds, ", "))
	case s.Unit != "" && s.Mode == ModeGlobal:
		add("unit", "is only for mode per-unit; mode global runs one task per node, not per unit")
	case s.Unit != "" && s.Mode != ModePerUnit:
		add("unit", "is only for mode per-unit (mode is %s)", truncate(s.Mode))
	}
	s.Task.validate("task", add)
	s.Task.Resources.validate("task.resources", s.Mode == ModePerUnit, add)
	r := s.Restart
	switch r.Condition {
	case RestartAny, RestartOnFailure, RestartNone:
	default:
		add("restart.condition", "unknown condition %q: use any, on-failure or none", truncate(r.Condition))
	}
	if r.MaxAttempts < 0 {
		add("restart.max_attempts", "must not be negative (got %d)", r.MaxAttempts)
	}
	if r.MaxDelay < r.Delay {
		add("restart.max_delay", "%s is less than restart.delay %s", r.MaxDelay, r.Delay)
	}
	s.validateMesh(add)
	s.validateUpdate(add)
	if len(s.Placement.Constraints) > MaxConstraints {
		add("placement.constraints", "at most %d constraints", MaxConstraints)
	}
	for i, c := range s.Placement.Constraints {
		if _, err := ParseConstraint(c); err != nil {
			add(fmt.Sprintf("placement.constraints[%d]", i), "%s", err.Error())
		}
	}
	s.Placement.validate(s.Mode, add)
	if s.Rebalance != nil && s.Mode != ModeReplicated {
		add("rebalance", "is only for mode replicated (a %s task belongs to its node and is never moved)", truncate(s.Mode))
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func validateLabels(labels map[string]string, at string, add func(string, string, ...any)) {
	if len(labels) > MaxLabels {
		add(at, "at most %d labels", MaxLabels)
	}
	for _, k := range sortedKeys(labels) {
		if len(k) > 253 || !labelKey.MatchString(k) {
			add(join(at, k), "invalid label key %q", truncate(k))
		}
		if len(labels[k]) > 1024 {
			add(join(at, k), "value is longer than 1024 characters")
		}
	}
}

func (t *TaskSpec) validate(at string, add func(string, string, ...any)) {
	switch t.Driver {
	case DriverProcess:
		if len(t.Command) == 0 {
			add(at+".command", "is required for driver process")
		}
		if t.Image != "" {
			add(at+".image", "is only for driver docker")
		}
		for _, f := range []struct {
			name string
			set  bool
		}{{"pull", t.Pull != ""}, {"read_only", t.ReadOnly != nil}, {"tmpfs", len(t.Tmpfs) > 0},
			{"cap_add", len(t.CapAdd) > 0}} {
			if f.set {
				add(at+"."+f.name, "is only for driver docker")
			}
		}
	case DriverDocker:
		if t.Image == "" {
			add(at+".image", "is required for driver docker")
		}
		t.validateDocker(at, add)
	default:
		add(at+".driver", "unknown driver %q: use process or docker", truncate(t.Driver))
	}
	if t.StopGracePeriod.D() > MaxStopGracePeriod {
		add(at+".stop_grace_period", "%s is over the limit of %s", t.StopGracePeriod, MaxStopGracePeriod)
	}
	if len(t.Command) > MaxCommandArgs {
		add(at+".command", "at most %d arguments", MaxCommandArgs)
	}
	if len(t.Command) > 0 && strings.TrimSpace(t.Command[0]) == "" {
		add(at+".command[0]", "the program must not be empty")
	}
	for i, a := range t.Command {
		if strings.IndexByte(a, 0) >= 0 {
			add(fmt.Sprintf("%s.command[%d]", at, i), "contains a NUL byte")
		}
	}
	if t.User != "" && !userSpec.MatchString(t.User) {
		add(at+".user", "%q is not a user name or uid[:gid]", truncate(t.User))
	}
	if t.Workdir != "" && !path.IsAbs(t.Workdir) {
		add(at+".workdir", "%q must be an absolute path", truncate(t.Workdir))
	}
	ports := map[string]PortSpec{}
	if len(t.Ports) > MaxPorts {
		add(at+".ports", "at most %d ports", MaxPorts)
	}
	for i, p := range t.Ports {
		f := fmt.Sprintf("%s.ports[%d]", at, i)
		switch {
		case p.Name == "":
			add(f+".name", "is required")
		case len(p.Name) > 63 || !dnsLabel.MatchString(p.Name):
			add(f+".name", "%q is not a valid port name: use lower-case letters, digits and '-'", truncate(p.Name))
		default:
			if _, dup := ports[p.Name]; dup {
				add(f+".name", "port name %q is used twice", p.Name)
			}
			ports[p.Name] = p
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			add(f+".protocol", "unknown protocol %q: use tcp or udp", truncate(p.Protocol))
		}
	}
	if len(t.Env) > MaxEnv {
		add(at+".env", "at most %d variables", MaxEnv)
	}
	for _, k := range sortedKeys(t.Env) {
		switch {
		case !envName.MatchString(k):
			add(at+".env."+k, "%q is not a valid variable name", truncate(k))
		case k == "PORT" && len(t.Ports) > 0:
			add(at+".env."+k, "PORT is set by Berth to the first port")
		case strings.HasPrefix(k, "BERTH_"):
			add(at+".env."+k, "names starting with BERTH_ are set by Berth")
		case strings.HasPrefix(k, "PORT_") && portByEnv(t.Ports, k):
			add(at+".env."+k, "clashes with the variable Berth sets for a port")
		}
		if strings.IndexByte(t.Env[k], 0) >= 0 {
			add(at+".env."+k, "contains a NUL byte")
		}
	}
	if h := t.Health; h != nil {
		hf := at + ".health"
		n := 0
		if h.HTTP != nil {
			n++
			checkPortRef(ports, h.HTTP.Port, hf+".http.port", add)
			if !strings.HasPrefix(h.HTTP.Path, "/") {
				add(hf+".http.path", "%q must start with '/'", truncate(h.HTTP.Path))
			}
		}
		if h.TCP != nil {
			n++
			checkPortRef(ports, h.TCP.Port, hf+".tcp.port", add)
		}
		if len(h.Exec) > 0 {
			n++
		}
		if n != 1 {
			add(hf, "set exactly one of http, tcp and exec (got %d)", n)
		}
		if h.Interval.D() < 100*time.Millisecond {
			add(hf+".interval", "%s is too short: at least 100ms", h.Interval)
		}
		if h.Retries < 0 {
			add(hf+".retries", "must not be negative (got %d)", h.Retries)
		}
		if h.Timeout.D() < 10*time.Millisecond {
			add(hf+".timeout", "%s is too short: at least 10ms", h.Timeout)
		}
	}
	res := t.Resources
	if res.CPUs < 0 || math.IsNaN(res.CPUs) {
		add(at+".resources.cpus", "must not be negative")
	} else if res.CPUs > 4096 {
		add(at+".resources.cpus", "%g is over the limit of 4096", res.CPUs)
	} else if res.CPUs > 0 && res.CPUs < 0.01 {
		add(at+".resources.cpus", "%g is below the minimum of 0.01", res.CPUs)
	}
	if res.Memory < 0 {
		add(at+".resources.memory", "must not be negative")
	} else if res.Memory > 0 && res.Memory < 4<<20 {
		add(at+".resources.memory", "%s is below the minimum of 4MiB", res.Memory)
	}
}

// validate checks the CPU policy and topology of r. perUnit allows an
// exclusive task without a CPU count: a per-unit task's CPUs are its unit's.
func (r Resources) validate(at string, perUnit bool, add func(string, string, ...any)) {
	switch r.CPUPolicy {
	case "", CPUPolicyShared:
	case CPUPolicyExclusive:
		switch {
		case r.CPUs == 0 && perUnit:
		case r.CPUs < 1 || r.CPUs != math.Trunc(r.CPUs):
			add(at+".cpus", "cpu_policy exclusive needs a whole number of CPUs, at least 1 (got %g)", r.CPUs)
		}
	default:
		add(at+".cpu_policy", "unknown policy %q: use %s or %s", truncate(r.CPUPolicy), CPUPolicyShared, CPUPolicyExclusive)
	}
	switch r.Topology {
	case "", TopologyPrefer:
	case TopologyRequireSingleNUMA:
		if !r.Exclusive() {
			add(at+".topology", "%s only applies to exclusive CPUs: set cpu_policy: exclusive", TopologyRequireSingleNUMA)
		}
	default:
		add(at+".topology", "unknown topology %q: use %s or %s", truncate(r.Topology), TopologyPrefer, TopologyRequireSingleNUMA)
	}
}

func portByEnv(ports []PortSpec, env string) bool {
	for _, p := range ports {
		if PortEnv(p.Name) == env {
			return true
		}
	}
	return false
}

func checkPortRef(ports map[string]PortSpec, name, field string, add func(string, string, ...any)) {
	p, ok := ports[name]
	switch {
	case name == "":
		add(field, "is required: name one of task.ports")
	case !ok:
		add(field, "no port named %q in task.ports", truncate(name))
	case p.Protocol == "udp":
		add(field, "port %q is udp; health checks need tcp", name)
	}
}

// PortEnv returns the environment variable that carries a port's host port:
// "http" → "PORT_HTTP", "admin-api" → "PORT_ADMIN_API".
func PortEnv(name string) string {
	return "PORT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ExpandVars replaces ${NAME} in s with vars[NAME]; references to unknown
// names are left as they are.
func ExpandVars(s string, vars map[string]string) string {
	return envVarRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// MaxPreferences caps a service's placement preferences.
const MaxPreferences = 8

// validate checks the preferences and the per-node cap of a service of
// mode. The constraints are checked by Validate.
func (p Placement) validate(mode string, add func(string, string, ...any)) {
	if len(p.Preferences) > MaxPreferences {
		add("placement.preferences", "at most %d preferences", MaxPreferences)
	}
	if len(p.Preferences) > 0 && mode != ModeReplicated {
		add("placement.preferences", "are only for mode replicated (mode %s places by node or unit)", truncate(mode))
	}
	seen := map[string]bool{}
	for i, pref := range p.Preferences {
		f := fmt.Sprintf("placement.preferences[%d].spread", i)
		key, err := ParseSpread(pref.Spread)
		switch {
		case err != nil:
			add(f, "%s", err.Error())
		case seen[key]:
			add(f, "%q is listed twice", pref.Spread)
		}
		seen[key] = true
	}
	switch {
	case p.MaxReplicasPerNode < 0:
		add("placement.max_replicas_per_node", "must not be negative (got %d)", p.MaxReplicasPerNode)
	case p.MaxReplicasPerNode > 0 && mode != ModeReplicated:
		add("placement.max_replicas_per_node", "is only for mode replicated (mode %s runs at most one task per node or unit)", truncate(mode))
	}
}

// ParseSpread returns the label key of a spread preference
// "node.labels.<key>".
func ParseSpread(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("is required: write node.labels.<key>")
	case !strings.HasPrefix(s, "node.labels."):
		return "", fmt.Errorf("%q: spread over a node label: write node.labels.<key>", truncate(s))
	}
	k := strings.TrimPrefix(s, "node.labels.")
	if len(k) > 253 || !labelKey.MatchString(k) {
		return "", fmt.Errorf("%q: invalid label key %q", truncate(s), truncate(k))
	}
	return k, nil
}

// ValidLabelKey reports whether k may be a label key: letters, digits, '.',
// '_', '/' and '-', starting and ending with a letter or digit, at most 253
// characters.
func ValidLabelKey(k string) bool { return len(k) <= 253 && labelKey.MatchString(k) }

// Constraint is a parsed placement constraint: Key Op Value.
type Constraint struct {
	// Key is "node.id", "node.hostname", "node.role" or "node.labels.<name>".
	Key string
	// Equal is true for "==", false for "!=".
	Equal bool
	Value string
}

// ErrConstraint is returned for a constraint that does not parse.
var ErrConstraint = errors.New("invalid constraint")

// ParseConstraint parses "node.labels.zone == a" and the like.
func ParseConstraint(s string) (Constraint, error) {
	var c Constraint
	op := "=="
	i := strings.Index(s, "==")
	if j := strings.Index(s, "!="); j >= 0 && (i < 0 || j < i) {
		i, op = j, "!="
	}
	if i < 0 {
		return c, fmt.Errorf("%q has no operator: write KEY == VALUE or KEY != VALUE", truncate(s))
	}
	c.Key = strings.TrimSpace(s[:i])
	c.Value = strings.TrimSpace(s[i+2:])
	c.Equal = op == "=="
	switch {
	case c.Key == "node.id", c.Key == "node.hostname", c.Key == "node.role":
	case strings.HasPrefix(c.Key, "node.labels."):
		if k := strings.TrimPrefix(c.Key, "node.labels."); !labelKey.MatchString(k) {
			return c, fmt.Errorf("%q: invalid label key %q", truncate(s), truncate(k))
		}
	default:
		return c, fmt.Errorf("%q: unknown key %q: use node.id, node.hostname, node.role or node.labels.<key>", truncate(s), truncate(c.Key))
	}
	if c.Value == "" || strings.ContainsAny(c.Value, "=! \t") {
		return c, fmt.Errorf("%q: the value must be one word", truncate(s))
	}
	return c, nil
}

// String formats c as it is written in a spec.
func (c Constraint) String() string {
	op := "!="
	if c.Equal {
		op = "=="
	}
	return c.Key + " " + op + " " + c.Value
}

// Matches reports whether node n satisfies c. A "!=" constraint on a label
// the node lacks holds; "==" on a missing label does not.
func (c Constraint) Matches(n *Node) bool {
	var v string
	var ok bool
	switch {
	case c.Key == "node.id":
		v, ok = n.ID, true
	case c.Key == "node.hostname":
		v, ok = n.Hostname, true
	case c.Key == "node.role":
		v, ok = n.Role, true
	default:
		v, ok = n.Labels[strings.TrimPrefix(c.Key, "node.labels.")]
	}
	if c.Equal {
		return ok && v == c.Value
	}
	return !ok || v != c.Value
}

// Pull policies of the docker driver.
const (
	PullIfNotPresent = "if-not-present"
	PullAlways       = "always"
	PullNever        = "never"
)

// MaxTmpfs caps the tmpfs mounts of one task.
const MaxTmpfs = 32

// capabilities are the Linux capabilities cap_add may name (without CAP_).
var capabilities = []string{
	"AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
	"DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
	"LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG",
	"SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
	"SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
}

// imageRef is a loose check of an image reference; the driver parses it
// fully.
var imageRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$`)

// validateDocker checks the docker-only fields of a docker task.
func (t *TaskSpec) validateDocker(at string, add func(string, string, ...any)) {
	if t.Image != "" && (len(t.Image) > 512 || !imageRef.MatchString(t.Image)) {
		add(at+".image", "%q is not an image reference such as name:tag", truncate(t.Image))
	}
	switch t.Pull {
	case PullIfNotPresent, PullAlways, PullNever:
	default:
		add(at+".pull", "unknown pull policy %q: use %s, %s or %s", truncate(t.Pull), PullIfNotPresent, PullAlways, PullNever)
	}
	if len(t.Tmpfs) > MaxTmpfs {
		add(at+".tmpfs", "at most %d paths", MaxTmpfs)
	}
	seen := map[string]bool{}
	for i, p := range t.Tmpfs {
		f := fmt.Sprintf("%s.tmpfs[%d]", at, i)
		switch {
		case !path.IsAbs(p) || path.Clean(p) != p || strings.ContainsAny(p, ":,\x00"):
			add(f, "%q must be a clean absolute path", truncate(p))
		case p == "/":
			add(f, "the root filesystem cannot be a tmpfs: set read_only: false instead")
		case seen[p]:
			add(f, "%q is listed twice", p)
		}
		seen[p] = true
	}
	for i, c := range t.CapAdd {
		name := strings.TrimPrefix(strings.ToUpper(c), "CAP_")
		if !slices.Contains(capabilities, name) {
			add(fmt.Sprintf("%s.cap_add[%d]", at, i), "unknown capability %q (ALL is not allowed: name each one)", truncate(c))
		}
	}
}
