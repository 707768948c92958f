// Package harness starts the real pieces of an MCP rate-limiting deployment for the
// integration tests: redis-server, the built extproc binary, Envoy rendered from the
// shipped template, and a demo MCP server built with the official Go SDK (or, with
// StartTSServer and Options.UpstreamAddr, one built with the TypeScript SDK). Every
// piece listens on a free loopback port, logs into a buffer that is printed only when
// the test fails, and is stopped gracefully in t.Cleanup.
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
)

// Tool is an external binary the tests need; see testtools.
type Tool = testtools.Tool

var (
	// EnvoyTool is found through ENVOY_BIN, then .tools/bin/envoy, then PATH.
	EnvoyTool = testtools.Envoy
	// RedisTool is found through REDIS_SERVER, then .tools/bin, then PATH.
	RedisTool = testtools.Redis
)

// RepoRoot returns the module root: the nearest parent of the working directory
// holding go.mod.
func RepoRoot() (string, error) { return testtools.RepoRoot() }

// RunWithExtproc is a TestMain body: it builds extproc once into a temporary
// directory, sets *bin (or *buildErr, for the tests to report), runs the
// tests and removes the directory. It returns m.Run's exit code.
func RunWithExtproc(m *testing.M, bin *string, buildErr *error) int {
	dir, err := os.MkdirTemp("", "extproc-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin, *buildErr = BuildExtproc(context.Background(), dir)
	return m.Run()
}

// BuildExtproc builds ./cmd/extproc into dir and returns the binary's path. Tests
// call it once, from TestMain, so that every test runs the real CLI.
func BuildExtproc(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "extproc")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/extproc")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/extproc: %w\n%s", err, b)
	}
	return out, nil
}
