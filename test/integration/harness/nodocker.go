//go:build !docker

package harness

import (
	"testing"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
)

// useDocker reports whether Redis and Envoy come from containers. Without the
// docker build tag the testcontainers-go path is not compiled in (it brings a large
// dependency tree), so the local binaries are always used.
func useDocker() (bool, string) {
	return false, "built without -tags docker"
}

func startRedisContainer(tb testing.TB, _ string) service {
	tb.Fatal("harness: built without -tags docker")
	return nil
}

func startEnvoyContainer(tb testing.TB, _ string, _ envoyconfig.Params) service {
	tb.Fatal("harness: built without -tags docker")
	return nil
}

func toHostInternal(eps []envoyconfig.Endpoint) []envoyconfig.Endpoint { return eps }
