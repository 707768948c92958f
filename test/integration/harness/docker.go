package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/testtools/proc"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
)

// Images used when a Docker engine is reachable. Envoy is pinned like the local one.
const (
	redisImage = "redis:7.4-alpine"
	envoyImage = "envoyproxy/envoy:v1.40.0"
)

// dockerCheck asks the Docker engine once per test binary whether it is reachable.
// MCPRL_TEST_DOCKER=off forces the local binaries (e.g. to test them on a machine
// that has Docker); anything else lets the engine's health decide.
var dockerCheck = sync.OnceValues(func() (bool, string) {
	if os.Getenv("MCPRL_TEST_DOCKER") == "off" {
		return false, "MCPRL_TEST_DOCKER=off"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false, fmt.Sprintf("no Docker provider: %v", err)
	}
	defer p.Close()
	if err := p.Health(ctx); err != nil {
		return false, fmt.Sprintf("Docker engine not reachable: %v", err)
	}
	return true, "Docker engine reachable"
})

// useDocker reports whether Redis and Envoy come from containers, and why.
func useDocker() (bool, string) { return dockerCheck() }

// containerService adapts a testcontainers container to the harness's service.
type containerService struct {
	name string
	c    testcontainers.Container
}

func (s *containerService) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), proc.ReadyBudget)
	defer cancel()
	return s.c.Start(ctx)
}

func (s *containerService) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), proc.StopBudget+5*time.Second)
	defer cancel()
	budget := proc.StopBudget
	return s.c.Stop(ctx, &budget)
}

func (s *containerService) Exited() bool {
	st, err := s.c.State(context.Background())
	return err != nil || !st.Running
}

func (s *containerService) Log() string {
	rc, err := s.c.Logs(context.Background())
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// startContainer starts req, prints its log if tb fails and terminates it in cleanup.
func startContainer(tb testing.TB, name string, req testcontainers.ContainerRequest) *containerService {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	s := &containerService{name: name, c: c}
	tb.Cleanup(func() {
		if c == nil {
			return
		}
		if tb.Failed() {
			tb.Logf("---- %s container log ----\n%s---- end of %s log ----", name, s.Log(), name)
		}
		if err := testcontainers.TerminateContainer(c); err != nil {
			tb.Errorf("terminate %s: %v", name, err)
		}
	})
	if err != nil {
		tb.Fatalf("start %s container: %v", name, err)
	}
	return s
}

// bindLoopback publishes the container's port on 127.0.0.1 at a fixed host port, so
// that the address stays the same across Stop and Start (Redis outage tests).
func bindLoopback(containerPort string, hostAddr string) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		_, port, _ := net.SplitHostPort(hostAddr)
		hc.PortBindings = network.PortMap{
			network.MustParsePort(containerPort + "/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: port}},
		}
	}
}

func startRedisContainer(tb testing.TB, addr string) service {
	tb.Helper()
	return startContainer(tb, "redis", testcontainers.ContainerRequest{
		Image:              redisImage,
		Cmd:                []string{"redis-server", "--save", "", "--appendonly", "no"},
		ExposedPorts:       []string{"6379/tcp"},
		HostConfigModifier: bindLoopback("6379", addr),
	})
}

// startEnvoyContainer runs Envoy with the rendered config. The upstream and extproc
// run on the host; Envoy reaches them through testcontainers' host port forwarding
// (toHostInternal rewrote their addresses).
func startEnvoyContainer(tb testing.TB, configPath string, p envoyconfig.Params, files ...testcontainers.ContainerFile) service {
	tb.Helper()
	var hostPorts []int
	for _, ep := range append(append([]envoyconfig.Endpoint{}, p.Upstream...), p.ExtProc...) {
		hostPorts = append(hostPorts, ep.Port)
	}
	listen, admin := strconv.Itoa(p.ListenPort), strconv.Itoa(p.AdminPort)
	return startContainer(tb, "envoy", testcontainers.ContainerRequest{
		Image:           envoyImage,
		Cmd:             []string{"envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warning"},
		Files:           append([]testcontainers.ContainerFile{{HostFilePath: configPath, ContainerFilePath: "/etc/envoy/envoy.yaml", FileMode: 0o644}}, files...),
		ExposedPorts:    []string{listen + "/tcp", admin + "/tcp"},
		HostAccessPorts: hostPorts,
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort(listen + "/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: listen}},
				network.MustParsePort(admin + "/tcp"):  {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: admin}},
			}
		},
	})
}

// toHostInternal points endpoints on the host's loopback at the name under which
// containers reach the host.
func toHostInternal(eps []envoyconfig.Endpoint) []envoyconfig.Endpoint {
	out := make([]envoyconfig.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = envoyconfig.Endpoint{Host: testcontainers.HostInternal, Port: ep.Port}
	}
	return out
}

// containerTLS points t's files at copies in the container, and returns them to
// copy there.
func containerTLS(t *envoyconfig.ExtProcTLS) (*envoyconfig.ExtProcTLS, []testcontainers.ContainerFile) {
	if t == nil {
		return nil, nil
	}
	in := *t
	var files []testcontainers.ContainerFile
	for i, path := range []*string{&in.TrustedCA, &in.ClientCert, &in.ClientKey} {
		if *path == "" {
			continue
		}
		dst := fmt.Sprintf("/etc/envoy/extproc-tls/%d-%s", i, filepath.Base(*path))
		files = append(files, testcontainers.ContainerFile{HostFilePath: *path, ContainerFilePath: dst, FileMode: 0o644})
		*path = dst
	}
	return &in, files
}
