package apiserver

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// operation describes one route for the OpenAPI document and /docs.
type operation struct {
	Method, Path, Summary string
	Request, Response     reflect.Type
	Stream                string // content type of a streamed response
	Status                int
	Public                bool
	Params                []string // query parameters
}

func typeOf[T any]() reflect.Type { return reflect.TypeOf((*T)(nil)).Elem() }

var operations = []operation{
	{Method: "GET", Path: "/api/v1/services", Summary: "List services, by name. Pages: limit (default 1000, at most 5000), continue (the Berth-Continue header of the previous page); Berth-Total is the count of all pages.", Response: typeOf[[]api.Service](), Params: []string{"limit", "continue"}},
	{Method: "GET", Path: "/api/v1/services/{name}", Summary: "Get a service", Response: typeOf[api.Service]()},
	{Method: "PUT", Path: "/api/v1/services/{name}", Summary: "Create or update a service from a spec (JSON or YAML). 201 when created, 200 when updated or unchanged. A changed spec is a new version; a changed task template starts a rolling update. The body also carries \"warnings\" (a list of strings, omitted when empty), each repeated in a Warning: 299 header. With dry_run=true nothing is stored and the answer is a DeployPlan: what the deploy would change and which tasks it would replace, start or stop.", Request: typeOf[api.ServiceSpec](), Response: typeOf[api.Service](), Params: []string{"dry_run"}},
	{Method: "POST", Path: "/api/v1/services/{name}/scale", Summary: "Set the replica count", Request: typeOf[ScaleRequest](), Response: typeOf[api.Service]()},
	{Method: "DELETE", Path: "/api/v1/services/{name}", Summary: "Remove a service; its tasks are stopped", Status: 204},
	{Method: "GET", Path: "/api/v1/services/{name}/versions", Summary: "The kept versions of a service, newest first", Response: typeOf[[]api.ServiceVersion]()},
	{Method: "POST", Path: "/api/v1/services/{name}/rollback", Summary: "Roll back to a kept version (to; default the previous spec) as a new version; drops waiting canaries. 404 naming to when the version is not kept.", Request: typeOf[api.RollbackRequest](), Response: typeOf[api.Service]()},
	{Method: "POST", Path: "/api/v1/services/{name}/promote", Summary: "Let an update whose canaries wait carry on (state canary → updating); 409 otherwise", Response: typeOf[api.Service]()},
	{Method: "POST", Path: "/api/v1/services/{name}/restart", Summary: "Replace every task of a service by a rolling update under its update policy, without another change: raises task.force_update as a new version. 409 while an update is in progress.", Response: typeOf[api.Service]()},
	{Method: "POST", Path: "/api/v1/services/{name}/rebalance", Summary: "Spread the service's tasks evenly over the nodes that can run them, once (even with rebalance: false); the orchestrator moves them start-first and sets rebalance_status.done; 409 for a global or per-unit service or one with placement preferences", Response: typeOf[api.Service]()},
	{Method: "POST", Path: "/api/v1/services/{name}/resume", Summary: "Continue a paused update (→ updating) or paused rollback (→ rolling_back); 409 otherwise", Response: typeOf[api.Service]()},
	{Method: "GET", Path: "/api/v1/services/{name}/tasks", Summary: "List a service's tasks (all=true includes ended ones). Pages: limit (default 1000, at most 5000), continue (the Berth-Continue header of the previous page); Berth-Total is the count of all pages.", Response: typeOf[[]api.Task](), Params: []string{"all", "limit", "continue"}},
	{Method: "GET", Path: "/api/v1/services/{name}/logs", Summary: "A service's task output, one prefixed line each, the tasks' lines merged in time order. tail=N lines of each task (after since); follow=true streams new lines (held 500 ms to be ordered); timestamps=true starts each line with its RFC 3339 time; since=<RFC 3339> leaves out older lines", Stream: "text/plain", Params: []string{"tail", "follow", "timestamps", "since"}},
	{Method: "GET", Path: "/api/v1/services/{name}/stats", Summary: "Resource use of a service's running tasks, sampled by their agents", Response: typeOf[[]api.TaskStats]()},
	{Method: "GET", Path: "/api/v1/tasks", Summary: "List tasks. Pages: limit (default 1000, at most 5000), continue (the Berth-Continue header of the previous page); Berth-Total is the count of all pages.", Response: typeOf[[]api.Task](), Params: []string{"service", "node", "all", "limit", "continue"}},
	{Method: "GET", Path: "/api/v1/tasks/{id}", Summary: "Get a task", Response: typeOf[api.Task]()},
	{Method: "GET", Path: "/api/v1/nodes", Summary: "List nodes", Response: typeOf[[]api.Node]()},
	{Method: "GET", Path: "/api/v1/nodes/{id}", Summary: "Get a node by id or hostname", Response: typeOf[api.Node]()},
	{Method: "PATCH", Path: "/api/v1/nodes/{id}", Summary: "Change a node's availability (active, pause, drain) and labels", Request: typeOf[api.NodeUpdate](), Response: typeOf[api.Node]()},
	{Method: "DELETE", Path: "/api/v1/nodes/{id}", Summary: "Remove a down node (?force=true: also a ready one; its tasks are replaced)", Status: 204},
	{Method: "GET", Path: "/api/v1/nodes/{id}/topology", Summary: "A node's CPU topology drawn as text: units, CPUs, the task holding each CPU, reserved CPUs and the shared pool", Stream: "text/plain"},
	{Method: "POST", Path: "/api/v1/nodes/register", Summary: "Agent: register a node", Request: typeOf[api.NodeRegistration](), Response: typeOf[api.Node]()},
	{Method: "POST", Path: "/api/v1/agent/renew", Summary: "Node: a new certificate for the calling node (same id and role) from a CSR", Request: typeOf[api.RenewRequest](), Response: typeOf[api.RenewResponse]()},
	{Method: "POST", Path: "/api/v1/join", Summary: "Public (the worker join token in the body is the credential; rate-limited per address): register a node and get its certificate, the cluster CA and the managers' addresses", Request: typeOf[api.JoinRequest](), Response: typeOf[api.JoinResponse](), Public: true},
	{Method: "GET", Path: "/api/v1/cluster/join-tokens", Summary: "The worker and manager join tokens", Response: typeOf[api.JoinTokens]()},
	{Method: "POST", Path: "/api/v1/cluster/join-tokens/{role}/rotate", Summary: "Replace the join token of a role (worker or manager); the old one stops working", Response: typeOf[api.JoinTokens]()},
	{Method: "GET", Path: "/api/v1/cluster/managers", Summary: "The managers, with their API and peer addresses, status and which one leads", Response: typeOf[[]api.ClusterManager]()},
	{Method: "POST", Path: "/api/v1/cluster/managers/join", Summary: "Public (the manager join token in the body is the credential; rate-limited): add a manager as an etcd member and get the cluster CA, its certificate and the initial cluster", Request: typeOf[api.ManagerJoinRequest](), Response: typeOf[api.ManagerJoinResponse](), Public: true},
	{Method: "DELETE", Path: "/api/v1/cluster/managers/{id}", Summary: "Remove a manager and its etcd member (?force=true: even below quorum)", Status: 204, Params: []string{"force"}},
	{Method: "GET", Path: "/api/v1/agent/drained/{task}", Summary: "Agent: whether every gateway has stopped sending the task traffic, given ?revision= of its desired shutdown", Response: typeOf[api.DrainStatus]()},
	{Method: "GET", Path: "/api/v1/endpoints", Summary: "Agent: stream of the routing mesh's state, per service its published ports, routes and healthy running tasks (NDJSON of Endpoints)", Response: typeOf[api.Endpoints](), Stream: "application/x-ndjson"},
	{Method: "GET", Path: "/api/v1/nodes/{id}/assignments", Summary: "Agent: stream of the node's full assignment set (NDJSON of Assignments)", Response: typeOf[api.Assignments](), Stream: "application/x-ndjson"},
	{Method: "POST", Path: "/api/v1/nodes/{id}/status", Summary: "Agent: heartbeat and task status", Request: typeOf[api.StatusReport](), Status: 204},
	{Method: "GET", Path: "/api/v1/info", Summary: "Server version and leadership"},
	{Method: "GET", Path: "/api/v1/certificates", Summary: "List uploaded certificates (metadata only, never keys)", Response: typeOf[[]api.Certificate]()},
	{Method: "GET", Path: "/api/v1/certificates/{name}", Summary: "Get an uploaded certificate (metadata only, never its key)", Response: typeOf[api.Certificate]()},
	{Method: "PUT", Path: "/api/v1/certificates/{name}", Summary: "Upload a certificate chain and key for the routing mesh, served by SNI. 201 when created, 200 when replaced; 400 naming cert_pem or key_pem when refused.", Request: typeOf[api.CertificateUpload](), Response: typeOf[api.Certificate]()},
	{Method: "DELETE", Path: "/api/v1/certificates/{name}", Summary: "Remove an uploaded certificate", Status: 204},
	{Method: "GET", Path: "/api/v1/gateway/ca", Summary: "The gateway CA certificate (PEM), which signs route certificates; trust it in clients of the mesh", Stream: "application/x-pem-file"},
	{Method: "POST", Path: "/api/v1/agent/gateway/certificates", Summary: "Agent: sign a PEM certificate request whose DNS names are all route hosts; answers the PEM chain", Stream: "application/x-pem-file"},
	{Method: "GET", Path: "/api/v1/agent/certificates", Summary: "Agent: stream of every uploaded certificate with its key (NDJSON of GatewayCertificates)", Response: typeOf[api.GatewayCertificates](), Stream: "application/x-ndjson"},
	{Method: "GET", Path: "/api/v1/openapi.json", Summary: "This document", Public: true},
	{Method: "GET", Path: "/docs", Summary: "A readable reference of the API", Public: true},
	{Method: "GET", Path: "/healthz", Summary: "Liveness", Public: true},
}

var (
	openAPIOnce sync.Once
	openAPIDoc  []byte
	schemas     map[string]any
)

// extraSchemas are answers no operation names as its response (one PUT
// answers a Service or, with dry_run=true, a DeployPlan): they are listed
// in the components all the same.
var extraSchemas = []reflect.Type{typeOf[api.DeployPlan]()}

// buildOpenAPI generates the OpenAPI 3 document from the Go types.
func buildOpenAPI(version string) []byte {
	openAPIOnce.Do(func() {
		schemas = map[string]any{}
		for _, t := range extraSchemas {
			schemaOf(t)
		}
		paths := map[string]map[string]any{}
		for _, op := range operations {
			o := map[string]any{"summary": op.Summary}
			if !op.Public {
				o["security"] = []any{map[string]any{"bearer": []any{}}}
			}
			var params []any
			for _, seg := range strings.Split(op.Path, "/") {
				if strings.HasPrefix(seg, "{") {
					params = append(params, map[string]any{"name": strings.Trim(seg, "{}"), "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
				}
			}
			for _, q := range op.Params {
				params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
			}
			if params != nil {
				o["parameters"] = params
			}
			if op.Request != nil {
				s := schemaOf(op.Request)
				o["requestBody"] = map[string]any{"required": true, "content": map[string]any{
					"application/json": map[string]any{"schema": s}, "application/yaml": map[string]any{"schema": s}}}
			}
			status := op.Status
			if status == 0 {
				status = 200
			}
			resp := map[string]any{"description": http.StatusText(status)}
			switch {
			case op.Stream != "" && op.Response != nil:
				resp["content"] = map[string]any{op.Stream: map[string]any{"schema": schemaOf(op.Response)}}
			case op.Stream != "":
				resp["content"] = map[string]any{op.Stream: map[string]any{"schema": map[string]any{"type": "string"}}}
			case op.Response != nil:
				resp["content"] = map[string]any{"application/json": map[string]any{"schema": schemaOf(op.Response)}}
			}
			o["responses"] = map[string]any{
				fmt.Sprint(status): resp,
				"default": map[string]any{"description": "An error", "content": map[string]any{
					"application/json": map[string]any{"schema": schemaOf(typeOf[api.Error]())}}},
			}
			if paths[op.Path] == nil {
				paths[op.Path] = map[string]any{}
			}
			paths[op.Path][strings.ToLower(op.Method)] = o
		}
		doc := map[string]any{
			"openapi": "3.0.3",
			"info":    map[string]any{"title": "Berth API", "version": version},
			"paths":   paths,
			"components": map[string]any{
				"schemas":         schemas,
				"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			},
		}
		openAPIDoc, _ = json.MarshalIndent(doc, "", "  ")
	})
	return openAPIDoc
}

// What the special types' strings look like.
const (
	durationText = "A duration such as 500ms, 1s, 1m30s"
	byteSizeText = "A size: bytes, or a number with KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
)

var (
	durationType = typeOf[api.Duration]()
	byteSizeType = typeOf[api.ByteSize]()
	timeType     = typeOf[time.Time]()
)

// schemaOf returns the JSON schema of t, registering named structs as
// components.
func schemaOf(t reflect.Type) map[string]any {
	switch t {
	case durationType:
		return map[string]any{"type": "string", "format": "duration", "example": "1s", "description": durationText}
	case byteSizeType:
		return map[string]any{"oneOf": []any{map[string]any{"type": "string", "example": "64MiB"}, map[string]any{"type": "integer"}}, "format": "byte-size", "description": byteSizeText}
	case timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Struct:
		name := t.Name()
		ref := map[string]any{"$ref": "#/components/schemas/" + name}
		if _, ok := schemas[name]; ok {
			return ref
		}
		schemas[name] = nil // break cycles
		props := map[string]any{}
		var required []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			jname, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() || jname == "-" {
				continue
			}
			if jname == "" {
				jname = f.Name
			}
			prop := schemaOf(f.Type)
			if d := fieldDocs[name+"."+f.Name]; d != "" {
				if _, isRef := prop["$ref"]; isRef {
					// OpenAPI 3.0 ignores the siblings of a $ref.
					prop = map[string]any{"allOf": []any{prop}}
				}
				if td, ok := prop["description"].(string); ok {
					d += " (" + td + ")"
				}
				prop["description"] = d
			}
			props[jname] = prop
			if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer {
				required = append(required, jname)
			}
		}
		sort.Strings(required)
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			s["required"] = required
		}
		schemas[name] = s
		return ref
	}
	return map[string]any{}
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(buildOpenAPI(s.cfg.Version))
	return err
}

var docsTemplate = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Berth API reference</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code{background:#f3f3f3;padding:0 .2em}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
.m{font-weight:bold;width:4.5rem}</style></head><body>
<h1>Berth API reference</h1>
<p>Base path <code>/api/v1</code>. Every call but the public ones needs <code>Authorization: Bearer &lt;token&gt;</code>
(the admin token is in <code>admin.token</code> in the data directory). Errors are JSON
<code>{"code","message","field"}</code>; <code>field</code> is the path of the offending field. The machine-readable
document is <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p>
<h2>Endpoints</h2><table><tr><th>Method</th><th>Path</th><th>What it does</th></tr>
{{range .Ops}}<tr><td class="m">{{.Method}}</td><td><code>{{.Path}}</code></td><td>{{.Summary}}{{if .Params}} — query: {{range .Params}}<code>{{.}}</code> {{end}}{{end}}</td></tr>
{{end}}</table>
<h2>Objects</h2>
{{range .Schemas}}<h3 id="{{.Name}}">{{.Name}}</h3><table><tr><th>Field</th><th>Type</th><th>Description</th></tr>
{{range .Fields}}<tr><td><code>{{.Name}}</code>{{if .Required}} *{{end}}</td><td>{{.Type}}</td><td>{{.Description}}</td></tr>{{end}}</table>
{{end}}
<p>The spec reference with every field's meaning and default is <code>docs/spec.md</code> in the Berth repository.</p>
</body></html>`))

func (s *Server) docsPage(w http.ResponseWriter, r *http.Request) error {
	buildOpenAPI(s.cfg.Version)
	type field struct {
		Name, Type, Description string
		Required                bool
	}
	type schema struct {
		Name   string
		Fields []field
	}
	var out []schema
	names := make([]string, 0, len(schemas))
	for n := range schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sc, _ := schemas[n].(map[string]any)
		props, _ := sc["properties"].(map[string]any)
		req, _ := sc["required"].([]string)
		var fs []field
		for _, p := range sortedMapKeys(props) {
			pm, _ := props[p].(map[string]any)
			d, _ := pm["description"].(string)
			fs = append(fs, field{Name: p, Type: describe(props[p]), Description: d, Required: contains(req, p)})
		}
		out = append(out, schema{Name: n, Fields: fs})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	return docsTemplate.Execute(w, map[string]any{"Ops": operations, "Schemas": out})
}

// describe names the type of a schema for /docs.
func describe(v any) string {
	m, _ := v.(map[string]any)
	if all, ok := m["allOf"].([]any); ok && len(all) == 1 {
		return describe(all[0])
	}
	if ref, ok := m["$ref"].(string); ok {
		return strings.TrimPrefix(ref, "#/components/schemas/")
	}
	switch m["format"] {
	case "duration":
		return "duration"
	case "byte-size":
		return "size"
	}
	switch m["type"] {
	case "array":
		return "list of " + describe(m["items"])
	case "object":
		return "map of string to " + describe(m["additionalProperties"])
	}
	if t, ok := m["type"].(string); ok {
		return t
	}
	return "any"
}

func sortedMapKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
