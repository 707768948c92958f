package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	child "github.com/mcp-ratelimit/extproc/internal/testtools/proc"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It is 100
// on every Linux architecture Go supports; the kernel scales to it whatever CONFIG_HZ is.
const clockTicks = 100

// proc is one started child process (child.Process). Its output goes to a
// file in the run's directory, so that a chatty process cannot grow the
// benchmark's memory, and is shown on failure.
type proc struct {
	*child.Process
}

// startProc starts path with args, its output in dir/name.log.
func startProc(dir, name, path string, args ...string) (*proc, error) {
	return startProcEnv(dir, name, path, nil, args...)
}

// startProcEnv is startProc with extra environment variables ("KEY=value") on
// top of loadbench's own.
func startProcEnv(dir, name, path string, env []string, args ...string) (*proc, error) {
	p, err := child.Start(child.Options{Name: name, Path: path, Args: args, Env: env, LogFile: filepath.Join(dir, name+".log")})
	if err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

func (p *proc) pid() int { return p.Pid() }

func (p *proc) exited() bool { return p.Exited() }

// tail returns the last bytes of the process's log, for error messages.
func (p *proc) tail() string { return p.Tail(2000) }

// stop sends SIGTERM and waits, then kills (child.StopBudget).
func (p *proc) stop() error { return p.Stop() }

// waitReady polls check until it succeeds, the process exits, or
// child.ReadyBudget passes; the error ends with the process's last output.
func (p *proc) waitReady(ctx context.Context, check func(context.Context) error) error {
	if err := child.WaitReady(ctx, p.Name, p.Exited, check); err != nil {
		return fmt.Errorf("%w\n%s", err, p.tail())
	}
	return nil
}

// tcpOpen succeeds once addr accepts a connection.
func tcpOpen(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// cpuTime returns the user+system CPU time of process pid, all its threads together.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat line.
// The command name (field 2) is in parentheses and may hold spaces or parentheses, so
// fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: got %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
