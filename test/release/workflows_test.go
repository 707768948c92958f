// Package release lints what ships the project rather than what runs in it:
// the GitHub workflows with actionlint and the Dockerfile with hadolint. A
// release workflow is only exercised when a tag is pushed; a typo found then
// is found too late.
package release

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
)

// actionlint is pinned; `go run pkg@version` builds it from the module proxy
// (cached after the first run) whatever the repository's go.mod says.
const actionlint = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"

// repoRoot is where the linters run, so that their messages name files as
// `git ls-files` does.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testtools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestWorkflowsPassActionlint(t *testing.T) {
	root := repoRoot(t)
	var files []string
	for _, pattern := range []string{"*.yml", "*.yaml"} {
		found, err := filepath.Glob(filepath.Join(root, ".github", "workflows", pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range found {
			rel, err := filepath.Rel(root, f)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, rel)
		}
	}
	if len(files) == 0 {
		t.Fatal("no .github/workflows/*.yml found under " + root)
	}

	// -shellcheck= and -pyflakes= turn off the checks actionlint delegates to
	// whatever shellcheck and pyflakes happen to be on PATH: with them the
	// verdict would depend on the machine (present or not, and which
	// version). The workflows' run: steps are one-line commands; the scripts
	// they call are in scripts/ and .ci/.
	args := append([]string{"run", actionlint, "-shellcheck=", "-pyflakes="}, files...)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
}
