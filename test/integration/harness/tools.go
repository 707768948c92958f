// Package harness starts the real pieces of an MCP rate-limiting deployment for the
// integration tests: redis-server, the built extproc binary, Envoy rendered from the
// shipped template, and a demo MCP server built with the official Go SDK. Every
// piece listens on a free loopback port, logs into a buffer that is printed only when
// the test fails, and is stopped gracefully in t.Cleanup.
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool names an external binary the tests need and where to look for it.
type Tool struct {
	// Name of the binary in .tools/bin and on PATH, e.g. "envoy".
	Name string
	// EnvVar overrides every other place, e.g. "ENVOY_BIN".
	EnvVar string
}

var (
	// EnvoyTool is found through ENVOY_BIN, then .tools/bin/envoy, then PATH.
	EnvoyTool = Tool{Name: "envoy", EnvVar: "ENVOY_BIN"}
	// RedisTool is found through REDIS_SERVER, then .tools/bin, then PATH.
	RedisTool = Tool{Name: "redis-server", EnvVar: "REDIS_SERVER"}
)

// errNotFound marks a tool that is missing everywhere.
var errNotFound = errors.New("not found")

// Find returns the tool's path: the env variable, then <repo>/.tools/bin, then PATH.
func (tool Tool) Find() (string, error) {
	if p := os.Getenv(tool.EnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", tool.EnvVar, p, err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", tool.Name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(tool.Name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s: %w in $%s, .tools/bin or PATH", tool.Name, errNotFound, tool.EnvVar)
}

// Require returns the tool's path. When it is missing, the test fails if CI=true
// (CI must never silently skip) and is skipped otherwise, with the reason and the fix.
func (tool Tool) Require(tb testing.TB) string {
	tb.Helper()
	p, err := tool.Find()
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%v; run scripts/install-tools.sh or set %s", err, tool.EnvVar)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// RepoRoot returns the module root: the nearest parent of the working directory
// holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod above the working directory")
		}
		dir = parent
	}
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
