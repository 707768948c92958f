// Package redistest starts a throwaway redis-server for tests.
//
// The binary is found through $REDIS_SERVER, then <module root>/.tools/bin, then
// PATH. When it is missing, tests fail if $CI is set (a CI run must not pass by
// skipping) and are skipped with the reason otherwise.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// Start starts a redis-server listening on a free loopback port, with persistence
// off, and returns its address ("127.0.0.1:port"). The server is stopped by
// tb.Cleanup; its log is printed only if the test failed.
func Start(tb testing.TB) string {
	tb.Helper()
	bin, err := findServer()
	if err != nil {
		if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
			tb.Fatalf("redistest: CI is set and %v", err)
		}
		tb.Skipf("redistest: skipping: %v", err)
	}
	// The port is free when probed but another process may take it before
	// redis-server binds it: try a few ports before giving up.
	var lastErr error
	for range 3 {
		addr, err := start(tb, bin)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	tb.Fatalf("redistest: %v", lastErr)
	return ""
}

func findServer() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("$REDIS_SERVER: %w", err)
		}
		return p, nil
	}
	if root, ok := moduleRoot(); ok {
		p := filepath.Join(root, ".tools", "bin", "redis-server")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server not found via $REDIS_SERVER, .tools/bin or PATH: %w", err)
	}
	return p, nil
}

// moduleRoot is the closest directory above the working directory (the test's
// package directory) holding go.mod.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs one redis-server and waits until it answers PING.
func start(tb testing.TB, bin string) (string, error) {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	dir := tb.TempDir()
	logPath := filepath.Join(dir, "redis.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()

	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(addr, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return "", fmt.Errorf("%s on %s: %w\n%s", bin, addr, err, readLog(logPath))
	}

	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("redis-server %s log:\n%s", addr, readLog(logPath))
		}
	})
	return addr, nil
}

// waitReady polls PING until the server answers PONG, it exits, or readyTimeout.
func waitReady(addr string, exited <-chan error) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ping(addr)
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("exited before ready: %v", werr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", readyTimeout, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("PING answered " + strings.TrimSpace(line))
	}
	return nil
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}
