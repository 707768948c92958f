// Package abuse attacks the built extproc binary's gRPC port with raw HTTP/2
// (golang.org/x/net/http2's Framer): frames a well-behaved client never sends,
// floods, stalls and half-sent messages. Each attack is bounded by a count and a
// few seconds; while it runs, a real grpc-go ext_proc client makes an ordinary
// exchange every probeEvery. After it, the test checks that the process is
// alive, that its resident memory stayed under the scenario's bound, and that a
// fresh client still gets an answer.
//
// The port is a listener that anyone who reaches it may speak to: Envoy is the
// expected client, but nothing but the network stops another one.
package abuse

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// extprocBin is the extproc binary built once for the whole run; buildErr says
// why it could not be built. Set in TestMain only.
var (
	extprocBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunWithExtproc(m, &extprocBin, &buildErr))
}

// probePolicy limits the probe's tool so that every probe is read and decided
// (not passed through unlimited), with a bucket no test run can empty.
const probePolicy = `server: abuse
rateLimiting:
  tools:
    - name: search
      shared: {maxTokens: 1000000, refillPeriod: 1s}
`

// startExtproc starts one extproc, on the in-memory store, for one test: each
// attack gets a fresh process, so that one's memory does not count against
// the next. args are added to its command line.
func startExtproc(t *testing.T, args ...string) *harness.Extproc {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("extproc binary: %v", buildErr)
	}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(probePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	return harness.StartExtproc(t, harness.ExtprocOptions{
		Binary: extprocBin, ConfigPath: policy,
		// The harness runs extproc at debug level, a line per stream; thousands
		// of attack streams would make the log, printed on failure, unreadable,
		// and its writing part of what the probe measures. The last flag wins.
		ExtraArgs: append([]string{"--log-level", "info"}, args...),
	})
}
