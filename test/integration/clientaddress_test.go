package integration

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// headerRecorder passes every request to next and keeps the headers of each, so a
// test can see what Envoy forwarded upstream.
type headerRecorder struct {
	next http.Handler
	mu   sync.Mutex
	seen []http.Header
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Header.Clone())
	h.mu.Unlock()
	h.next.ServeHTTP(w, r)
}

func (h *headerRecorder) last() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[len(h.seen)-1]
}

// sourceAddressPolicy gives each client address 2 tools/call an hour: nothing
// refills during the test, so a third call passing means a second bucket.
const sourceAddressPolicy = `server: it
rateLimiting:
  perUser: {maxTokens: 2, refillPeriod: 1h}
identity:
  - sourceAddress: {}
`

// A client that forges its forwarding headers must still be the one user its TCP
// peer address makes it: if Envoy derived source.address from X-Forwarded-For, every
// forged value would be a new user with a full bucket.
func TestForgedForwardedForNeverChangesTheUser(t *testing.T) {
	upstream := demo.New(demo.Options{})
	rec := &headerRecorder{next: upstream}
	env := start(t, sourceAddressPolicy, harness.Options{UpstreamHandler: rec})
	raw := newRawClient(t, env.URL)

	const calls = 6
	for i := range calls {
		id := strconv.Itoa(i + 1)
		forged := map[string]string{
			"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i+1),
			"X-Real-IP":       fmt.Sprintf("198.51.100.%d", i+1),
			"Forwarded":       fmt.Sprintf("for=192.0.2.%d", i+1),
			// Headers only Envoy itself may set: a client's copy must not be
			// taken as Envoy's word about where the request came from.
			"X-Envoy-External-Address": fmt.Sprintf("203.0.113.%d", i+1),
			"X-Envoy-Internal":         "true",
		}
		r := raw.post(callBody(id, demo.ToolEcho), forged)
		if i < 2 {
			checkPassed(t, "call "+id+" within the bucket", r)
			continue
		}
		checkRejected(t, r, id, "server", "perUser")
	}
	if got := upstream.Calls(demo.ToolEcho); got != 2 {
		t.Errorf("upstream echo calls: got %d, want 2 (one bucket of 2 for the one real client)", got)
	}

	// What the upstream is told: Envoy appends the peer it saw to the client's
	// X-Forwarded-For (for a loopback peer, Envoy's own address) and replaces the
	// client's X-Envoy-External-Address with the peer.
	h := rec.last() // call 2, the last one the limiter let through
	if got := h.Get("X-Forwarded-For"); !strings.HasPrefix(got, "203.0.113.2,") {
		t.Errorf("upstream X-Forwarded-For: got %q, want the forged 203.0.113.2 followed by the address Envoy appended", got)
	}
	if got := h.Get("X-Envoy-External-Address"); got == "" || got == "203.0.113.2" {
		t.Errorf("upstream X-Envoy-External-Address: got %q, want the peer Envoy saw", got)
	}
	if got := h.Get("X-Envoy-Internal"); got != "" {
		t.Errorf("upstream X-Envoy-Internal: got %q, want the client's copy dropped", got)
	}
}

// Every shipped deployment must take source.address from the connection, not from a
// header the client writes; the test above proves what that does through Envoy.
func TestShippedConfigsTakeTheClientAddressFromTheConnection(t *testing.T) {
	wantHCM := func(t *testing.T, where string, hcm any) {
		t.Helper()
		if got := path(t, hcm, "use_remote_address"); got != true {
			t.Errorf("%s: use_remote_address: got %v, want true", where, got)
		}
		if got := path(t, hcm, "xff_num_trusted_hops"); got != 0 {
			t.Errorf("%s: xff_num_trusted_hops: got %v, want 0", where, got)
		}
	}
	t.Run("envoy/envoy.yaml", func(t *testing.T) {
		doc := yamlDocs(t, repoFile(t, "envoy/envoy.yaml"))[0]
		wantHCM(t, "http_connection_manager", path(t, doc, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config"))
	})
	t.Run("envoy/istio/envoyfilter.yaml", func(t *testing.T) {
		envoy := harness.EnvoyTool.Require(t)
		var hcmPatch map[string]any
		for _, d := range yamlDocs(t, repoFile(t, "envoy/istio/envoyfilter.yaml")) {
			if d["kind"] != "EnvoyFilter" {
				continue
			}
			for _, p := range path(t, d, "spec", "configPatches").([]any) {
				if path(t, p, "applyTo") == "NETWORK_FILTER" && path(t, p, "match", "context") == "SIDECAR_INBOUND" {
					hcmPatch = path(t, p, "patch", "value", "typed_config").(map[string]any)
				}
			}
		}
		if hcmPatch == nil {
			t.Fatal("want a NETWORK_FILTER patch of the SIDECAR_INBOUND connection manager")
		}
		wantHCM(t, "NETWORK_FILTER patch", hcmPatch)
		// Envoy must accept the patched fields: merge them into the bootstrap the
		// filter is validated in and ask the binary.
		filter, limit := istioManifest(t)
		var boot map[string]any
		if err := yaml.Unmarshal(bootstrapFor(t, filter, limit), &boot); err != nil {
			t.Fatal(err)
		}
		hcm := path(t, boot, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config").(map[string]any)
		maps.Copy(hcm, hcmPatch)
		validateEnvoyConfig(t, envoy, boot)
	})
	t.Run("envoy/gateway/extensionpolicy.yaml", func(t *testing.T) {
		for _, d := range yamlDocs(t, repoFile(t, "envoy/gateway/extensionpolicy.yaml")) {
			if d["kind"] == "ClientTrafficPolicy" {
				if got := path(t, d, "spec", "clientIPDetection", "xForwardedFor", "numTrustedHops"); got != 0 {
					t.Errorf("ClientTrafficPolicy clientIPDetection.xForwardedFor.numTrustedHops: got %v, want 0", got)
				}
				return
			}
		}
		t.Fatal("want a ClientTrafficPolicy")
	})
}

func validateEnvoyConfig(t *testing.T, envoy string, boot map[string]any) {
	t.Helper()
	b, err := yaml.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), envoy, "--mode", "validate", "-c", p, "--log-level", "warning").CombinedOutput(); err != nil {
		t.Errorf("envoy --mode validate: %v\n%s\nconfig:\n%s", err, out, b)
	}
}
