// Package proc starts, watches and stops the child processes of the tests and
// the bench (Envoy, redis-server, extproc, MCP servers): one launcher, so that
// each stops the same way (SIGTERM, then a kill after StopBudget), waits for
// readiness the same way (a check polled every 20 ms, never a fixed sleep) and
// keeps its output for the failure message.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

const (
	// StopBudget is how long a process gets to exit after SIGTERM before it
	// is killed: extproc drains its streams, Envoy and redis-server exit at
	// once.
	StopBudget = 10 * time.Second
	// ReadyBudget bounds every readiness wait. Envoy takes about a second to
	// start here.
	ReadyBudget = 30 * time.Second
)

// Options say what to run. Path is required.
type Options struct {
	// Name labels the process in messages; default: Path.
	Name string
	Path string
	Args []string
	// Env is added to this process's environment ("KEY=value"); nil: as is.
	Env []string
	// LogFile, when set, receives the output (appended to, so that restarts
	// keep the earlier runs'); otherwise it is kept in memory. A file keeps a
	// chatty process from growing the caller's memory.
	LogFile string
}

// Process is one started binary. Stop and Start may be called again (a test
// stops Redis mid-test and starts it back with the same arguments).
type Process struct {
	Name string
	o    Options
	mem  *syncBuffer // nil with LogFile

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd.Wait's, set before done closes
}

// Start starts a process as o says.
func Start(o Options) (*Process, error) {
	if o.Name == "" {
		o.Name = o.Path
	}
	p := &Process{Name: o.Name, o: o}
	if o.LogFile == "" {
		p.mem = &syncBuffer{}
	}
	return p, p.Start()
}

// Start starts the process again with the same options, if it is not running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	out, closeOut, err := p.output()
	if err != nil {
		return err
	}
	cmd := exec.Command(p.o.Path, p.o.Args...)
	if len(p.o.Env) > 0 {
		cmd.Env = append(os.Environ(), p.o.Env...)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		closeOut()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	// An in-memory log, printed when a test fails, says when the process
	// started and ended; a log file holds the process's own output only.
	if p.mem != nil {
		fmt.Fprintf(out, "proc: started %s (pid %d)\n", p.Name, cmd.Process.Pid)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if p.mem != nil {
			fmt.Fprintf(out, "proc: %s exited: %v\n", p.Name, err)
		}
		closeOut()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// output opens where the process writes.
func (p *Process) output() (io.Writer, func(), error) {
	if p.mem != nil {
		return p.mem, func() {}, nil
	}
	f, err := os.OpenFile(p.o.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// Stop sends SIGTERM, waits up to StopBudget, then kills. Stopping a stopped
// process does nothing.
func (p *Process) Stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil // it had exited already; its log says why
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM %s: %w", p.Name, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(StopBudget):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.Name, StopBudget)
	}
}

// Exited reports whether the process is not running: it exited by itself, or
// was stopped.
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

// Wait blocks until the running process exits; it returns at once when none
// runs.
func (p *Process) Wait() {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Err is how the last run ended (exec.Cmd.Wait's error), nil while it runs
// or when it exited cleanly.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the running process's id, 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the running process.
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Log returns what the process printed so far.
func (p *Process) Log() string {
	if p.mem != nil {
		return p.mem.String()
	}
	b, err := os.ReadFile(p.o.LogFile)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Tail returns the last n bytes of Log, for error messages.
func (p *Process) Tail(n int) string {
	l := p.Log()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return l
}

// WaitReady polls check every 20 ms until it returns nil, the process exits
// (Exited), or ReadyBudget passes: the readiness check, never a fixed sleep.
// exited may be nil for a check of something that is no process of ours.
func WaitReady(ctx context.Context, what string, exited func() bool, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyBudget)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if exited != nil && exited() {
			return fmt.Errorf("%s: exited before it was ready: %w", what, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready within %v: %w", what, ReadyBudget, last)
		case <-tick.C:
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago. The small
// window before the process binds it is acceptable for tests; every port is
// random.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects a process's output; safe for its two pipes at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
