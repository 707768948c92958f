package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
)

// npmBudget bounds one `npm ci`: a cold cache downloads about a hundred modules.
const npmBudget = 3 * time.Minute

// NodeProject returns the folder rel (from the repository root, e.g.
// "test/tsclient") with its node modules installed: `npm ci` runs there at most
// once per test binary, and not at all when node_modules already holds every
// dependency at the version package.json pins. node_modules is the cache between
// runs (CI may cache it too, keyed on package-lock.json). Without node or npm on
// PATH the test is skipped, or fails under CI.
func NodeProject(tb testing.TB, rel string) string {
	tb.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := tool + " not found on PATH; install Node.js 20 or later to run the TypeScript SDK tests"
			if testtools.InCI() {
				tb.Fatal(msg)
			}
			tb.Skip(msg)
		}
	}
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, filepath.FromSlash(rel))
	once, _ := npmInstalls.LoadOrStore(dir, sync.OnceValue(func() error { return npmCI(dir) }))
	if err := once.(func() error)(); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// npmInstalls maps a folder to its one `npm ci` (a func() error from
// sync.OnceValue), so tests running in parallel share it.
var npmInstalls sync.Map

// npmCI runs `npm ci` in dir unless its pinned dependencies are installed already.
func npmCI(dir string) error {
	if installed(dir) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmBudget)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out)
	}
	return nil
}

// installed reports whether node_modules in dir holds every dependency of
// package.json at the version it pins. A pin changed since the last install
// (a new SDK release, say) then reinstalls rather than test the old one.
func installed(dir string) bool {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "package.json")); err != nil || json.Unmarshal(b, &pkg) != nil {
		return false // npm ci reports what is wrong with it
	}
	for name, pin := range pkg.Dependencies {
		var mod struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", filepath.FromSlash(name), "package.json"))
		if err != nil || json.Unmarshal(b, &mod) != nil || mod.Version != pin {
			return false
		}
	}
	return true
}
