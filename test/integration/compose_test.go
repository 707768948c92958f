package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
	"github.com/mcp-ratelimit/extproc/internal/testtools"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// The compose file's health checks gate `depends_on: service_healthy`: one that
// never passes (as Envoy's did when it asked over HTTP/1.0, which Envoy's admin
// answers with 426) leaves `docker compose up` waiting forever. Without a Docker
// engine, this runs each check as written against the same program the image
// runs, all of them in one network namespace of their own: like the containers,
// each listens on its compose port (6379, 8081, 8080, 9901) on a loopback no
// other test shares.

// composeFile is the part of docker-compose.yaml these tests read.
type composeFile struct {
	Services map[string]struct {
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Configs     []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"configs"`
		Healthcheck struct {
			Test    []string `yaml:"test"`
			Timeout string   `yaml:"timeout"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Configs map[string]struct {
		Content string `yaml:"content"`
	} `yaml:"configs"`
}

// netns is a network namespace with its loopback up, held open by a sleeping
// process; run puts commands in it.
type netns struct{ path string }

func newNetns(t *testing.T) netns {
	t.Helper()
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		harness.Tool{Name: tool}.Require(t)
	}
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600")
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "up\n" {
		// unshare needs CAP_SYS_ADMIN: root, as on CI, or a user namespace.
		msg := fmt.Sprintf("no network namespace: unshare --net: %s", strings.TrimSpace(stderr.String()))
		if testtools.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return netns{path: fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)}
}

// command returns name with args, to run inside the namespace. nsenter execs
// name after entering, so the process is name itself (signals reach it).
func (n netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.path, "--", name}, args...)...)
}

// start runs a service in the namespace until the test ends, its output printed
// if the test fails.
func (n netns) start(t *testing.T, name string, env []string, bin string, args ...string) {
	t.Helper()
	cmd := n.command(context.Background(), bin, args...)
	cmd.Env = env
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("---- %s log ----\n%s---- end of %s log ----", name, log.String(), name)
		}
	})
}

// healthCheck runs a compose healthcheck test once, with its timeout; paths
// maps what the image has to what this machine has.
func (n netns) healthCheck(test []string, timeout time.Duration, paths map[string]string) error {
	if len(test) < 2 || test[0] != "CMD" {
		return fmt.Errorf("healthcheck test %q: want [\"CMD\", ...]", test)
	}
	argv := append([]string(nil), test[1:]...)
	if local, ok := paths[argv[0]]; ok {
		argv[0] = local
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := n.command(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%q: %w: %s", test, err, out)
	}
	return nil
}

// awaitHealthy runs the check as compose would, until it passes or the budget
// (retries x interval in the compose file: 60 s) runs out.
func (n netns) awaitHealthy(test []string, timeout time.Duration, paths map[string]string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := n.healthCheck(test, timeout, paths)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestComposeHealthChecksPassAgainstTheProgramsTheyProbe(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("extproc binary: %v", buildErr)
	}
	var compose composeFile
	if err := yaml.Unmarshal(repoFile(t, "docker-compose.yaml"), &compose); err != nil {
		t.Fatal(err)
	}
	envoyBin := harness.EnvoyTool.Require(t)
	redisBin := harness.RedisTool.Require(t)
	busybox := harness.Tool{Name: "busybox", EnvVar: "BUSYBOX"}.Require(t)
	for _, tool := range []string{"bash", "redis-cli"} {
		harness.Tool{Name: tool}.Require(t)
	}
	dir := t.TempDir()
	mcpserverBin := filepath.Join(dir, "mcpserver")
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", mcpserverBin, "./test/mcpserver")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./test/mcpserver: %v\n%s", err, out)
	}

	// The files the containers mount, written here: the compose configs and
	// envoy/envoy.yaml rendered for one loopback instead of the service names.
	paths := map[string]string{"/usr/local/bin/busybox": busybox}
	for name, svc := range compose.Services {
		for _, c := range svc.Configs {
			p := filepath.Join(dir, name+"-"+filepath.Base(c.Target))
			if err := os.WriteFile(p, []byte(compose.Configs[c.Source].Content), 0o644); err != nil {
				t.Fatal(err)
			}
			paths[c.Target] = p
		}
	}
	p := envoyconfig.Defaults()
	p.Upstream = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 8080}}
	p.ExtProc = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 50051}}
	cfg, err := envoyconfig.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	paths["/etc/envoy/envoy.yaml"] = filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(paths["/etc/envoy/envoy.yaml"], cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	mapped := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			if local, ok := paths[a]; ok {
				a = local
			}
			out[i] = a
		}
		return out
	}
	// Every service name resolves to this one loopback.
	hostEnv := func(env map[string]string) []string {
		out := []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range env {
			for name := range compose.Services {
				v = strings.ReplaceAll(v, "//"+name+":", "//127.0.0.1:")
			}
			out = append(out, k+"="+v)
		}
		return out
	}

	ns := newNetns(t)
	// In depends_on order. How each image starts its program: its ENTRYPOINT (or
	// the image's own command) followed by the compose command.
	steps := []struct {
		service string
		env     []string
		bin     string
		args    []string
	}{
		{"redis", nil, redisBin, compose.Services["redis"].Command[1:]},
		{"mcp-server", nil, mcpserverBin, append([]string{"--addr", ":8080"}, compose.Services["mcp-server"].Command...)},
		{"extproc", append(hostEnv(compose.Services["extproc"].Environment),
			// The image's ENV (Dockerfile).
			"EXTPROC_GRPC_ADDR=:50051", "EXTPROC_ADMIN_ADDR=:8081"),
			extprocBin, mapped(compose.Services["extproc"].Command)},
		// --disable-hot-restart: other tests' Envoys may hold hot restart's shared memory.
		{"envoy", nil, envoyBin, append(mapped(compose.Services["envoy"].Command[1:]), "--disable-hot-restart")},
	}
	if len(steps) != len(compose.Services) {
		t.Fatalf("docker-compose.yaml has %d services, this test starts %d", len(compose.Services), len(steps))
	}
	for _, s := range steps {
		hc := compose.Services[s.service].Healthcheck
		timeout, err := time.ParseDuration(hc.Timeout)
		if err != nil {
			t.Fatalf("%s: healthcheck timeout %q: %v", s.service, hc.Timeout, err)
		}
		// Before the program runs, its check must fail: one that passes anyway
		// checks nothing.
		if err := ns.healthCheck(hc.Test, timeout, paths); err == nil {
			t.Fatalf("%s: health check %q passed before %s started", s.service, hc.Test, s.service)
		}
		env := s.env
		if env == nil {
			env = []string{"PATH=" + os.Getenv("PATH")}
		}
		ns.start(t, s.service, env, s.bin, s.args...)
		if err := ns.awaitHealthy(hc.Test, timeout, paths); err != nil {
			t.Fatalf("%s: health check never passed: %v", s.service, err)
		}
	}
}

// The check that compose used to run: Envoy's admin refuses HTTP/1.0, so it could
// never pass and `docker compose up` waited on Envoy until it gave up.
func TestEnvoyAdminRefusesTheHTTP10HealthCheck(t *testing.T) {
	envoyBin := harness.EnvoyTool.Require(t)
	harness.Tool{Name: "bash"}.Require(t)
	ns := newNetns(t)
	p := envoyconfig.Defaults()
	p.Upstream = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 8080}}
	p.ExtProc = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 50051}}
	cfg, err := envoyconfig.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	ns.start(t, "envoy", []string{"PATH=" + os.Getenv("PATH")}, envoyBin, "-c", path, "--disable-hot-restart", "--log-level", "warning")
	ask := func(request string) string {
		script := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && printf '%s' >&3 && head -n1 <&3", p.AdminPort, request)
		out, _ := ns.command(context.Background(), "bash", "-c", script).Output()
		return strings.TrimSpace(string(out))
	}
	deadline := time.Now().Add(30 * time.Second)
	for ask(`GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`) != "HTTP/1.1 200 OK" {
		if time.Now().After(deadline) {
			t.Fatal("envoy: /ready never answered 200 over HTTP/1.1")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := ask(`GET /ready HTTP/1.0\r\n\r\n`), "HTTP/1.1 426 Upgrade Required"; got != want {
		t.Errorf("GET /ready over HTTP/1.0: got %q, want %q", got, want)
	}
}
