package harness

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/testcontainers/testcontainers-go"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
)

// Envoy is a running Envoy.
type Envoy struct {
	svc        service
	ListenAddr string // 127.0.0.1:port, where MCP clients connect
	AdminAddr  string // 127.0.0.1:port
	ConfigPath string // the rendered configuration
}

// StartEnvoy renders the shipped template with p (listen and admin ports replaced by
// free ones), starts Envoy and waits until its admin /ready answers 200.
func StartEnvoy(tb testing.TB, p envoyconfig.Params) *Envoy {
	tb.Helper()
	listenPort, adminPort := FreePort(tb), FreePort(tb)
	e := &Envoy{ListenAddr: Addr(listenPort), AdminAddr: Addr(adminPort)}
	docker, _ := useDocker()
	var mounts []testcontainers.ContainerFile // the TLS files, in the container
	if docker {
		// Inside the container Envoy listens on every interface; Docker maps the
		// ports to the same numbers on the host's loopback.
		p.ListenAddress, p.AdminAddress = "0.0.0.0", "0.0.0.0"
		p.Upstream = toHostInternal(p.Upstream)
		p.ExtProc = toHostInternal(p.ExtProc)
		p.ExtProcTLS, mounts = containerTLS(p.ExtProcTLS)
	} else {
		p.ListenAddress, p.AdminAddress = "127.0.0.1", "127.0.0.1"
	}
	p.ListenPort, p.AdminPort = listenPort, adminPort
	cfg, err := envoyconfig.Render(p)
	if err != nil {
		tb.Fatal(err)
	}
	e.ConfigPath = filepath.Join(tb.TempDir(), "envoy.yaml")
	if err := os.WriteFile(e.ConfigPath, cfg, 0o644); err != nil {
		tb.Fatal(err)
	}
	if docker {
		e.svc = startEnvoyContainer(tb, e.ConfigPath, p, mounts...)
	} else {
		bin := EnvoyTool.Require(tb)
		// --disable-hot-restart: several Envoys run at once in one test binary, and hot
		// restart's shared memory would need a distinct --base-id for each.
		e.svc = startProcess(tb, "envoy", bin, "-c", e.ConfigPath, "--disable-hot-restart",
			"--concurrency", strconv.Itoa(2), "--log-level", "warning",
			// The access log reaches stdout every 10 s by default; tests read it.
			"--file-flush-interval-msec", "50")
	}
	if err := WaitFor(context.Background(), "envoy", e.svc, func(ctx context.Context) error {
		return HTTPOK(ctx, "http://"+e.AdminAddr+"/ready")
	}); err != nil {
		tb.Fatal(err)
	}
	return e
}

// Stop stops Envoy.
func (e *Envoy) Stop() error { return e.svc.Stop() }
