package integration

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// These tests need Envoy but not extproc: every Envoy configuration the project ships
// is checked by the real binary, and the copies of the ext_proc filter agree.

const extProcFilterName = "envoy.filters.http.ext_proc"

func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// yamlDocs decodes every document of a multi-document YAML file.
func yamlDocs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	var docs []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			if errors.Is(err, io.EOF) {
				return docs
			}
			t.Fatalf("decode YAML: %v", err)
		}
		docs = append(docs, d)
	}
}

// path walks maps and lists: keys for maps, ints for lists.
func path(t *testing.T, v any, steps ...any) any {
	t.Helper()
	for _, s := range steps {
		switch k := s.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %q: got %T, want a map", k, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at [%d]: got %T, want a list that long", k, v)
			}
			v = l[k]
		}
	}
	return v
}

// shippedExtProc returns the ext_proc filter of envoy/envoy.yaml.
func shippedExtProc(t *testing.T) map[string]any {
	t.Helper()
	doc := yamlDocs(t, repoFile(t, "envoy/envoy.yaml"))[0]
	filters := path(t, doc, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config", "http_filters").([]any)
	for _, f := range filters {
		if f.(map[string]any)["name"] == extProcFilterName {
			return f.(map[string]any)
		}
	}
	t.Fatal("envoy/envoy.yaml has no ext_proc filter")
	return nil
}

// istioManifest returns the EnvoyFilter's ext_proc filter and the listener buffer limit.
func istioManifest(t *testing.T) (filter map[string]any, bufferLimit int) {
	t.Helper()
	for _, d := range yamlDocs(t, repoFile(t, "envoy/istio/envoyfilter.yaml")) {
		if d["kind"] != "EnvoyFilter" {
			continue
		}
		for _, p := range path(t, d, "spec", "configPatches").([]any) {
			switch path(t, p, "applyTo") {
			case "HTTP_FILTER":
				filter = path(t, p, "patch", "value").(map[string]any)
			case "LISTENER":
				bufferLimit = path(t, p, "patch", "value", "per_connection_buffer_limit_bytes").(int)
			}
		}
	}
	if filter == nil || bufferLimit == 0 {
		t.Fatal("envoy/istio/envoyfilter.yaml: want an HTTP_FILTER patch and a LISTENER buffer limit")
	}
	return filter, bufferLimit
}

// istioHeadersToAdd returns the response_headers_to_add of the EnvoyFilter's
// VIRTUAL_HOST patch.
func istioHeadersToAdd(t *testing.T) any {
	t.Helper()
	for _, d := range yamlDocs(t, repoFile(t, "envoy/istio/envoyfilter.yaml")) {
		if d["kind"] != "EnvoyFilter" {
			continue
		}
		for _, p := range path(t, d, "spec", "configPatches").([]any) {
			if path(t, p, "applyTo") == "VIRTUAL_HOST" {
				return path(t, p, "patch", "value", "response_headers_to_add")
			}
		}
	}
	t.Fatal("envoy/istio/envoyfilter.yaml: want a VIRTUAL_HOST patch adding response headers")
	return nil
}

// The quota headers of allowed answers: Istio adds the same ones as envoy/envoy.yaml.
func TestIstioAddsTheResponseHeadersOfEnvoyYAML(t *testing.T) {
	doc := yamlDocs(t, repoFile(t, "envoy/envoy.yaml"))[0]
	want := path(t, doc, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config",
		"route_config", "virtual_hosts", 0, "response_headers_to_add")
	if want == nil {
		t.Fatal("envoy/envoy.yaml: no response_headers_to_add on the virtual host")
	}
	if diff := cmp.Diff(want, istioHeadersToAdd(t)); diff != "" {
		t.Errorf("response_headers_to_add (-envoy.yaml +istio):\n%s", diff)
	}
}

// gatewayManifest translates the EnvoyExtensionPolicy into the ext_proc filter Envoy
// Gateway generates from it, and reads the ClientTrafficPolicy's buffer limit.
func gatewayManifest(t *testing.T) (filter map[string]any, bufferLimit int) {
	t.Helper()
	for _, d := range yamlDocs(t, repoFile(t, "envoy/gateway/extensionpolicy.yaml")) {
		switch d["kind"] {
		case "EnvoyExtensionPolicy":
			ep := path(t, d, "spec", "extProc", 0).(map[string]any)
			timeout, err := time.ParseDuration(ep["messageTimeout"].(string))
			if err != nil {
				t.Fatal(err)
			}
			bodyModes := map[string]string{"Buffered": "BUFFERED", "Streamed": "STREAMED", "BufferedPartial": "BUFFERED_PARTIAL"}
			body, ok := bodyModes[path(t, ep, "processingMode", "request", "body").(string)]
			if !ok {
				t.Fatalf("processingMode.request.body: got %v", path(t, ep, "processingMode", "request", "body"))
			}
			respMode := "SKIP"
			if path(t, ep, "processingMode").(map[string]any)["response"] != nil {
				respMode = "SEND"
			}
			filter = map[string]any{
				"name": extProcFilterName,
				"typed_config": map[string]any{
					"@type":              "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
					"grpc_service":       map[string]any{"envoy_grpc": map[string]any{"cluster_name": "extproc"}},
					"failure_mode_allow": ep["failOpen"],
					"message_timeout":    fmt.Sprintf("%d.%03ds", timeout/time.Second, (timeout%time.Second)/time.Millisecond),
					"processing_mode": map[string]any{
						"request_header_mode": "SEND", "request_body_mode": body, "request_trailer_mode": "SKIP",
						"response_header_mode": respMode, "response_body_mode": "NONE", "response_trailer_mode": "SKIP",
					},
					"request_attributes": path(t, ep, "processingMode", "request", "attributes"),
					"metadata_options": map[string]any{
						"forwarding_namespaces": map[string]any{"untyped": path(t, ep, "metadata", "accessibleNamespaces")},
						"receiving_namespaces":  map[string]any{"untyped": path(t, ep, "metadata", "writableNamespaces")},
					},
				},
			}
		case "ClientTrafficPolicy":
			s := path(t, d, "spec", "connection", "bufferLimit").(string)
			n, ok := strings.CutSuffix(s, "Mi")
			if !ok {
				t.Fatalf("bufferLimit: got %q, want NMi", s)
			}
			var mib int
			if _, err := fmt.Sscan(n, &mib); err != nil {
				t.Fatal(err)
			}
			bufferLimit = mib << 20
		}
	}
	if filter == nil || bufferLimit == 0 {
		t.Fatal("envoy/gateway/extensionpolicy.yaml: want an EnvoyExtensionPolicy and a ClientTrafficPolicy")
	}
	return filter, bufferLimit
}

// gatewayHeaderMutation is the header_mutation filter Envoy Gateway builds from
// envoy/gateway/quota-headers.yaml's lateResponseHeaders (its
// buildHeaderMutationFilter): each add appended as written, an empty result
// not kept.
func gatewayHeaderMutation(t *testing.T) map[string]any {
	t.Helper()
	doc := yamlDocs(t, repoFile(t, "envoy/gateway/quota-headers.yaml"))[0]
	var mutations []any
	for _, h := range path(t, doc, "spec", "headers", "lateResponseHeaders", "add").([]any) {
		mutations = append(mutations, map[string]any{"append": map[string]any{
			"header":        map[string]any{"key": path(t, h, "name"), "value": path(t, h, "value")},
			"append_action": "APPEND_IF_EXISTS_OR_ADD",
		}})
	}
	return map[string]any{
		"name": "envoy.filters.http.header_mutation",
		"typed_config": map[string]any{
			"@type":     "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
			"mutations": map[string]any{"response_mutations": mutations},
		},
	}
}

// gatewayBootstrap is bootstrapFor of Envoy Gateway's ext_proc filter with its
// header_mutation filter between it and the router.
func gatewayBootstrap(t *testing.T) []byte {
	t.Helper()
	filter, limit := gatewayManifest(t)
	var boot map[string]any
	if err := yaml.Unmarshal(bootstrapFor(t, filter, limit), &boot); err != nil {
		t.Fatal(err)
	}
	hcm := path(t, boot, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config").(map[string]any)
	filters := hcm["http_filters"].([]any)
	hcm["http_filters"] = []any{filters[0], gatewayHeaderMutation(t), filters[1]}
	b, err := yaml.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bootstrapFor wraps an ext_proc filter in the smallest Envoy bootstrap that can run
// it: one listener with the filter before the router, and the cluster it names.
func bootstrapFor(t *testing.T, filter map[string]any, bufferLimit int, headersToAdd ...any) []byte {
	t.Helper()
	cluster := path(t, filter, "typed_config", "grpc_service", "envoy_grpc", "cluster_name").(string)
	vhost := map[string]any{
		"name": "mcp", "domains": []any{"*"},
		"routes": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": cluster}}},
	}
	if len(headersToAdd) > 0 {
		vhost["response_headers_to_add"] = headersToAdd[0]
	}
	boot := map[string]any{
		"static_resources": map[string]any{
			"listeners": []any{map[string]any{
				"name":                              "mcp",
				"address":                           map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 10000}},
				"per_connection_buffer_limit_bytes": bufferLimit,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"name": "envoy.filters.network.http_connection_manager",
					"typed_config": map[string]any{
						"@type":        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
						"stat_prefix":  "mcp",
						"route_config": map[string]any{"virtual_hosts": []any{vhost}},
						"http_filters": []any{filter, map[string]any{
							"name":         "envoy.filters.http.router",
							"typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
						}},
					},
				}}}},
			}},
			"clusters": []any{map[string]any{
				"name": cluster, "type": "STATIC", "connect_timeout": "1s",
				"typed_extension_protocol_options": map[string]any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
					"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
					"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
				}},
				"load_assignment": map[string]any{"cluster_name": cluster, "endpoints": []any{map[string]any{"lb_endpoints": []any{
					map[string]any{"endpoint": map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 50051}}}},
				}}}},
			}},
		},
	}
	b, err := yaml.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestShippedEnvoyConfigsPassEnvoyValidate(t *testing.T) {
	envoy := harness.EnvoyTool.Require(t)
	testParams := envoyconfig.Defaults()
	testParams.ExtProc = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 50051}, {Host: "127.0.0.1", Port: 50052}}
	testParams.Upstream = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 8080}}
	rendered, err := envoyconfig.Render(testParams)
	if err != nil {
		t.Fatal(err)
	}
	istioFilter, istioLimit := istioManifest(t)
	tests := []struct {
		name   string
		config []byte
	}{
		{"envoy/envoy.yaml", repoFile(t, "envoy/envoy.yaml")},
		{"template as the tests render it", rendered},
		{"envoy/istio/envoyfilter.yaml ext_proc filter", bootstrapFor(t, istioFilter, istioLimit, istioHeadersToAdd(t))},
		{"envoy/gateway as ext_proc and header_mutation filters", gatewayBootstrap(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(p, tt.config, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), envoy, "--mode", "validate", "-c", p, "--log-level", "warning").CombinedOutput()
			if err != nil {
				t.Errorf("envoy --mode validate: %v\n%s\nconfig:\n%s", err, out, tt.config)
			}
		})
	}
}

// The Istio and Gateway copies of the filter must say what envoy/envoy.yaml says;
// only the cluster name differs (each platform names its own).
func TestShippedExtProcFiltersAgree(t *testing.T) {
	strip := func(f map[string]any) map[string]any {
		tc := map[string]any{}
		for k, v := range f["typed_config"].(map[string]any) {
			if k != "grpc_service" {
				tc[k] = v
			}
		}
		return tc
	}
	want := strip(shippedExtProc(t))
	istioFilter, istioLimit := istioManifest(t)
	gwFilter, gwLimit := gatewayManifest(t)
	tests := []struct {
		name        string
		filter      map[string]any
		bufferLimit int
	}{
		{"istio", istioFilter, istioLimit},
		{"gateway", gwFilter, gwLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(want, strip(tt.filter)); diff != "" {
				t.Errorf("ext_proc typed_config differs from envoy/envoy.yaml (-shipped +%s):\n%s", tt.name, diff)
			}
			if tt.bufferLimit != envoyconfig.DefaultBufferLimitBytes {
				t.Errorf("buffer limit: got %d, want %d", tt.bufferLimit, envoyconfig.DefaultBufferLimitBytes)
			}
		})
	}
}

func TestComposeFileNamesItsServicesWithHealthChecks(t *testing.T) {
	doc := yamlDocs(t, repoFile(t, "docker-compose.yaml"))[0]
	services, ok := doc["services"].(map[string]any)
	if !ok {
		t.Fatalf("services: got %T, want a map", doc["services"])
	}
	var names []string
	for name := range services {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"envoy", "extproc", "mcp-server", "redis"}; !slices.Equal(names, want) {
		t.Errorf("services: got %v, want %v", names, want)
	}
	for _, name := range names {
		if path(t, services[name], "healthcheck", "test") == nil {
			t.Errorf("service %s: no healthcheck", name)
		}
	}
	if vols, _ := path(t, services["envoy"], "volumes").([]any); !slices.Contains(vols, any("./envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro")) {
		t.Errorf("envoy volumes: got %v, want the shipped ./envoy/envoy.yaml mounted", vols)
	}
	// envoy/envoy.yaml's default endpoints are the compose service names.
	d := envoyconfig.Defaults()
	for _, ep := range append(d.Upstream, d.ExtProc...) {
		if _, ok := services[ep.Host]; !ok {
			t.Errorf("envoy/envoy.yaml points at %s:%d, which is not a compose service", ep.Host, ep.Port)
		}
	}
}
