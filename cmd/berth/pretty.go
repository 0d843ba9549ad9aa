package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/berth-project/berth/api"
)

// prettyField is one "Name: value" line of inspect --pretty.
type prettyField struct{ name, value string }

// writePretty writes aligned "Name:  value" lines, skipping empty values.
func writePretty(w io.Writer, fields []prettyField) {
	width := 0
	for _, f := range fields {
		width = max(width, len(f.name))
	}
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		fmt.Fprintf(w, "%-*s  %s\n", width+1, f.name+":", f.value)
	}
}

// prettyService writes a service for a person: what it is, where its
// update stands, how many tasks run, then its spec as YAML (every default
// filled in).
func prettyService(w io.Writer, now time.Time, svc api.Service, tasks []api.Task) error {
	mode := svc.Spec.Mode
	switch mode {
	case api.ModeReplicated, "":
		mode = fmt.Sprintf("replicated, %d replicas", svc.Spec.ReplicaCount())
	case api.ModePerUnit:
		mode = "per-unit (" + svc.Spec.Unit + ")"
	}
	running, want := countRunning(svc, tasks)
	update := ""
	if st := svc.UpdateStatus; st != nil {
		update = fmt.Sprintf("%s, version %d → %d, %d/%d %s, %d failed", st.State, st.FromVersion, st.ToVersion, st.Updated, st.Total, updateUnit(st), st.Failed)
		if st.Message != "" {
			update += ": " + oneLine(st.Message)
		}
	}
	writePretty(w, []prettyField{
		{"Service", svc.Spec.Name},
		{"ID", svc.ID},
		{"Version", fmt.Sprintf("%d, updated %s, created %s", svc.Version, ago(now, svc.UpdatedAt), ago(now, svc.CreatedAt))},
		{"Mode", mode},
		{"Tasks", fmt.Sprintf("%d/%d running", running, want)},
		{"Ports", formatPublished(svc.Spec.Task.Ports)},
		{"Update", update},
	})
	b, err := yaml.Marshal(svc.Spec)
	if err != nil {
		return fmt.Errorf("encoding the spec: %w", err)
	}
	fmt.Fprintln(w, "Spec:")
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintln(w, "  "+l)
	}
	return nil
}

// prettyNode writes a node for a person.
func prettyNode(w io.Writer, now time.Time, n api.Node) {
	labels := make([]string, 0, len(n.Labels))
	for k, v := range n.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	topo := ""
	if t := n.Topology; t != nil {
		topo = "CPUs " + t.Online
		if n.ReservedCPUs != "" {
			topo += ", reserved " + n.ReservedCPUs
		}
	}
	writePretty(w, []prettyField{
		{"Node", n.Hostname},
		{"ID", n.ID},
		{"Role", n.Role},
		{"Status", fmt.Sprintf("%s, %s, last heartbeat %s", n.Status, n.Availability, ago(now, n.LastHeartbeat))},
		{"Address", n.Address},
		{"Resources", strings.TrimSpace(formatCPUs(n.Resources.CPUs) + " CPUs, " + humanBytes(int64(n.Resources.Memory)))},
		{"Topology", topo},
		{"Drivers", strings.Join(n.Drivers, ", ")},
		{"Labels", strings.Join(labels, ", ")},
		{"Ports", fmt.Sprintf("%d-%d", n.PortRange[0], n.PortRange[1])},
		{"Created", ago(now, n.CreatedAt)},
	})
}
