package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// buildBinary builds cmd/extproc into a temporary directory, as users get it.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("go tool not found in PATH: %v", err)
		}
		t.Skipf("go tool not found in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "extproc")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-ldflags", "-X main.version=v0.0.0-test", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestBinary(t *testing.T) {
	bin := buildBinary(t)

	t.Run("version uses the ldflags version", func(t *testing.T) {
		out, err := exec.CommandContext(t.Context(), bin, "version").Output()
		if err != nil {
			t.Fatalf("extproc version: %v", err)
		}
		if !strings.HasPrefix(string(out), "extproc v0.0.0-test go1.") {
			t.Errorf("got %q, want it to start with %q", out, "extproc v0.0.0-test go1.")
		}
	})

	t.Run("usage error exits 2", func(t *testing.T) {
		cmd := exec.CommandContext(t.Context(), bin, "--log-level", "loud")
		out, err := cmd.CombinedOutput()
		if code := exitCodeOf(t, err); code != 2 {
			t.Errorf("exit code: got %d, want 2 (output %q)", code, out)
		}
		if !strings.Contains(string(out), `invalid --log-level "loud"`) {
			t.Errorf("got output %q, want it to name the flag and value", out)
		}
	})

	t.Run("serves and exits 0 on SIGTERM", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		// Nothing is inherited from the test's environment.
		cmd, logs, exited := startBinary(ctx, t, bin, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")

		target, admin := logs.addrs(ctx, t)
		logs.wait(ctx, t, "ready")
		if code, body := get(ctx, t, admin+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
			t.Errorf("GET /healthz: got %d %q, want 200 ok", code, body)
		}
		hc, _ := healthClient(t, target)
		if got := checkHealth(ctx, t, hc, extProcService); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health: got %v, want SERVING", got)
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := waitExit(ctx, t, exited); err != nil {
			t.Errorf("exit after SIGTERM: got %v, want code 0", err)
		}
		if !logs.has("stopped") {
			t.Error(`got no "stopped" log, want a graceful shutdown`)
		}
	})

	t.Run("exits non-zero when redis is unreachable", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		addr := "127.0.0.1:" + closedPort(t)
		cmd := exec.CommandContext(ctx, bin, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
			"--redis-url", "redis://"+addr+"/0")
		cmd.Env = []string{"REDIS_PASSWORD=hunter2"}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("still running after %s", testTimeout)
		}
		if code := exitCodeOf(t, err); code != 1 {
			t.Errorf("exit code: got %d, want 1", code)
		}
		// The last line is main's error, after the JSON logs.
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		last := lines[len(lines)-1]
		if !strings.Contains(last, "redis") || !strings.Contains(last, addr) {
			t.Errorf("got last stderr line %q, want a message naming redis at %s", last, addr)
		}
		if strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("got stderr %q, want no password in it", stderr.String())
		}
	})
}

// exitCodeOf returns the exit code in an exec error (0 for nil).
func exitCodeOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("got %v, want an exit status", err)
	}
	return ee.ExitCode()
}
