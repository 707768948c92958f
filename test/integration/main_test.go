// Package integration runs the rate limiter as users run it: a real Envoy (rendered
// from the shipped envoy/envoy.yaml template), the built extproc binary, a real
// redis-server and an MCP server built with the official Go SDK, driven by the Go
// SDK's MCP client and by raw HTTP.
//
// Tools: ENVOY_BIN / REDIS_SERVER, then .tools/bin (scripts/install-tools.sh), then
// PATH. Missing tools skip the tests, or fail them when CI=true.
package integration

import (
	"os"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// extprocBin is the extproc binary built once for the whole run; buildErr says why
// it could not be built. Set in TestMain only, read by the tests.
var (
	extprocBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunWithExtproc(m, &extprocBin, &buildErr))
}

// start starts a deployment running policy, with o's other options.
func start(t *testing.T, policy string, o harness.Options) *harness.Env {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("extproc binary: %v", buildErr)
	}
	o.ExtprocBinary = extprocBin
	o.Policy = policy
	return harness.Start(t, o)
}
