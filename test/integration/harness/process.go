package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopBudget is how long a process gets to exit after SIGTERM before it is killed:
// extproc drains streams, Envoy and redis-server exit at once.
const stopBudget = 10 * time.Second

// readyBudget bounds every readiness wait. Envoy takes about a second to start here.
const readyBudget = 30 * time.Second

// logBuffer collects a process's output; safe for the process's two pipes at once.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// service is a started dependency: a local process or, when a Docker engine is reachable, a container.
type service interface {
	Start() error
	Stop() error
	Exited() bool
	Log() string
}

// Process is one started binary. Stop and Start may be called again (a test stops
// Redis mid-test and starts it back on the same port).
type Process struct {
	Name string
	path string
	args []string
	log  *logBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// startProcess starts path with args, logging into a buffer that is printed if tb
// fails, and stops it in tb.Cleanup.
func startProcess(tb testing.TB, name, path string, args ...string) *Process {
	tb.Helper()
	p := &Process{Name: name, path: path, args: args, log: &logBuffer{}}
	// Cleanups run last-registered first: the process stops, then its log is printed.
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("---- %s log ----\n%s---- end of %s log ----", name, p.log.String(), name)
		}
	})
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Errorf("stop %s: %v", name, err)
		}
	})
	if err := p.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	return p
}

// Start starts the process again with the same arguments, if it is not running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", p.path, err)
	}
	fmt.Fprintf(p.log, "harness: started %s (pid %d)\n", p.Name, cmd.Process.Pid)
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(p.log, "harness: %s exited: %v\n", p.Name, err)
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// Stop sends SIGTERM, waits up to stopBudget, then kills. Stopping a stopped
// process does nothing.
func (p *Process) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	select {
	case <-done:
		return nil // it had exited already; its log says why
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(stopBudget):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("did not exit within %v of SIGTERM; killed", stopBudget)
	}
}

// Exited reports whether the process has exited by itself.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log returns what the process printed so far.
func (p *Process) Log() string { return p.log.String() }

// FreePort returns a loopback TCP port that was free a moment ago. The small window
// before the process binds it is acceptable for tests; every port is random.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr returns "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// WaitFor polls check every 20 ms until it returns nil, the process exits, or
// readyBudget passes. It is the readiness check, never a fixed sleep.
func WaitFor(ctx context.Context, what string, s service, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, readyBudget)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if s != nil && s.Exited() {
			return fmt.Errorf("%s: exited before it was ready: %w", what, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready within %v: %w", what, readyBudget, last)
		case <-tick.C:
		}
	}
}
