package envoyconfig

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// missingClusters returns the clusters a configuration names (a route's
// cluster, a gRPC service's or load assignment's cluster_name) that it does
// not define. `envoy --mode validate` does not check this: an ext_proc filter
// whose cluster is misspelt validates, and at run time every request then
// fails its processor, which failure_mode_allow turns into a pass.
func missingClusters(config []byte) ([]string, error) {
	var doc any
	if err := yaml.Unmarshal(config, &doc); err != nil {
		return nil, err
	}
	defined := map[string]bool{}
	root, _ := doc.(map[string]any)
	static, _ := root["static_resources"].(map[string]any)
	clusters, _ := static["clusters"].([]any)
	for _, c := range clusters {
		if m, ok := c.(map[string]any); ok {
			if name, ok := m["name"].(string); ok {
				defined[name] = true
			}
		}
	}
	var missing []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "cluster" || k == "cluster_name") && !defined[s] && !slices.Contains(missing, s) {
					missing = append(missing, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if len(clusters) == 0 {
		return nil, fmt.Errorf("no static_resources.clusters")
	}
	return missing, nil
}

// TestEveryClusterAConfigNamesExists checks the shipped envoy.yaml and the
// template rendered with each option the tests and the demo use.
func TestEveryClusterAConfigNamesExists(t *testing.T) {
	shipped, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string][]byte{"envoy.yaml": shipped}
	withJWT := Defaults()
	withJWT.JWTAuthn = &JWTAuthn{Issuer: "https://issuer.example", JWKS: `{"keys":[]}`}
	withTLS := Defaults()
	withTLS.ExtProcTLS = &ExtProcTLS{TrustedCA: "/tls/ca.crt", SNI: "extproc.mcp.svc", ClientCert: "/tls/tls.crt", ClientKey: "/tls/tls.key"}
	for name, p := range map[string]Params{"jwt_authn": withJWT, "extproc TLS": withTLS} {
		out, err := Render(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		configs["rendered with "+name] = out
	}
	for name, c := range configs {
		missing, err := missingClusters(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(missing) > 0 {
			t.Errorf("%s names clusters it does not define: %s", name, strings.Join(missing, ", "))
		}
	}
}

// TestAMisspeltClusterIsFound: the check sees a typo that envoy --mode
// validate lets through.
func TestAMisspeltClusterIsFound(t *testing.T) {
	shipped, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	typo := strings.Replace(string(shipped), "cluster_name: extproc\n", "cluster_name: ext_proc\n", 1)
	if typo == string(shipped) {
		t.Fatal("envoy.yaml has no `cluster_name: extproc` line to misspell")
	}
	missing, err := missingClusters([]byte(typo))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, []string{"ext_proc"}) {
		t.Errorf("got missing %q, want [ext_proc]", missing)
	}
}
