// Package testtools finds the external binaries tests need (redis-server,
// envoy), the same way for every test package: an environment variable, then the
// project's .tools/bin (scripts/install-tools.sh), then PATH. A missing tool
// fails the test under CI and skips it elsewhere, with the reason printed.
package testtools

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool names an external binary and where to look for it.
type Tool struct {
	// Name of the binary in .tools/bin and on PATH, e.g. "envoy".
	Name string
	// EnvVar overrides every other place, e.g. "ENVOY_BIN".
	EnvVar string
}

var (
	// Envoy is found through ENVOY_BIN, then .tools/bin/envoy, then PATH.
	Envoy = Tool{Name: "envoy", EnvVar: "ENVOY_BIN"}
	// Redis is found through REDIS_SERVER, then .tools/bin, then PATH.
	Redis = Tool{Name: "redis-server", EnvVar: "REDIS_SERVER"}
)

// ErrNotFound marks a tool that is missing everywhere.
var ErrNotFound = errors.New("not found")

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
	return "", fmt.Errorf("%s: %w in $%s, .tools/bin or PATH", tool.Name, ErrNotFound, tool.EnvVar)
}

// Require returns the tool's path. When it is missing, the test fails under CI
// (CI must never pass by skipping) and is skipped otherwise, with the reason and
// the fix.
func (tool Tool) Require(tb testing.TB) string {
	tb.Helper()
	p, err := tool.Find()
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%v; run scripts/install-tools.sh or set %s", err, tool.EnvVar)
	if InCI() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// InCI reports whether the CI environment variable is set to something true.
func InCI() bool {
	ci := os.Getenv("CI")
	return ci != "" && ci != "false" && ci != "0"
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
			return "", errors.New("testtools: no go.mod above the working directory")
		}
		dir = parent
	}
}
