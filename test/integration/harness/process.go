package harness

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/testtools/proc"
)

// service is a started dependency: a local process or, when a Docker engine is reachable, a container.
type service interface {
	Start() error
	Stop() error
	Exited() bool
	Log() string
}

// Process is one started binary (proc.Process): Stop and Start may be called
// again.
type Process struct {
	*proc.Process
}

// startProcess starts path with args, logging into a buffer that is printed if tb
// fails, and stops it in tb.Cleanup.
func startProcess(tb testing.TB, name, path string, args ...string) *Process {
	tb.Helper()
	pp, err := proc.Start(proc.Options{Name: name, Path: path, Args: args})
	if err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Process{pp}
	// Cleanups run last-registered first: the process stops, then its log is printed.
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("---- %s log ----\n%s---- end of %s log ----", name, p.Log(), name)
		}
	})
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Errorf("stop %s: %v", name, err)
		}
	})
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago (proc.FreePort).
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := proc.FreePort()
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	return port
}

// Addr returns "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// WaitFor is proc.WaitReady for a service (nil: no process to watch).
func WaitFor(ctx context.Context, what string, s service, check func(context.Context) error) error {
	var exited func() bool
	if s != nil {
		exited = s.Exited
	}
	return proc.WaitReady(ctx, what, exited, check)
}
