// Package redistest starts throwaway Redis deployments for tests: a single
// server (Start, StartServer), one speaking TLS (StartTLS), one with an ACL user
// (StartWithACL), a three-master Cluster (StartCluster) and a Sentinel-managed
// master (StartSentinel). Every server listens on free loopback ports with
// persistence off, is stopped by tb.Cleanup, and has its log printed only if the
// test failed.
//
// The binary is found through $REDIS_SERVER, then <module root>/.tools/bin, then
// PATH. When it is missing, tests fail if $CI is set (a CI run must not pass by
// skipping) and are skipped with the reason otherwise.
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
	"github.com/mcp-ratelimit/extproc/internal/testtools/proc"
)

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
	// pollInterval paces readiness polls; it is not a synchronisation sleep.
	pollInterval = 10 * time.Millisecond
)

// Start starts a redis-server listening on a free loopback port, with persistence
// off, and returns its address ("127.0.0.1:port"). The server is stopped by
// tb.Cleanup; its log is printed only if the test failed.
func Start(tb testing.TB) string {
	tb.Helper()
	return StartServer(tb).Addr
}

// Server is a redis-server started for a test. Its methods must not be called
// concurrently with each other.
type Server struct {
	// Addr is "127.0.0.1:port"; it stays the same across Restart.
	Addr string

	bin     string
	conf    string   // configuration file, first argument when set
	args    []string // everything but --port, --tls-port and the persistence flags
	tls     bool     // Addr is the TLS port
	probe   probe
	dir     string
	logPath string

	mu   sync.Mutex
	proc *proc.Process // nil while stopped
}

// StartServer starts a redis-server as Start does, with extra command-line
// arguments (e.g. "--maxmemory", "1mb"), and returns it to be stopped or
// restarted.
func StartServer(tb testing.TB, args ...string) *Server {
	tb.Helper()
	return startServer(tb, serverConfig{args: args})
}

// serverConfig says how to run one redis-server.
type serverConfig struct {
	args []string
	// conf, when set, is the configuration file, passed before every argument.
	conf string
	// tls makes the server listen with TLS only, on the port of Addr.
	tls bool
	// probe is how to check readiness: TLS and credentials.
	probe probe
	// name is the log file's name in the server's directory.
	name string
}

func startServer(tb testing.TB, c serverConfig) *Server {
	tb.Helper()
	bin := testtools.Redis.Require(tb)
	if c.name == "" {
		c.name = "redis"
	}
	s := &Server{bin: bin, conf: c.conf, args: c.args, tls: c.tls, probe: c.probe, dir: tb.TempDir()}
	s.logPath = filepath.Join(s.dir, c.name+".log")
	// The port is free when probed but another process may take it before
	// redis-server binds it: try a few ports before giving up.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: find a free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.run(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatalf("redistest: %v", lastErr)
	}
	tb.Cleanup(func() {
		s.stop()
		if tb.Failed() {
			tb.Logf("redis-server %s log:\n%s", s.Addr, readLog(s.logPath))
		}
	})
	return s
}

// Stop stops the server, as a crash or an outage would; Restart starts it again.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.stop()
}

// Restart stops the server if it runs and starts it again on the same port with
// the same arguments. Persistence is off, so it comes back empty: no keys, no
// scripts. It fails the test if the port was taken meanwhile.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.stop()
	if err := s.run(); err != nil {
		tb.Fatalf("redistest: restart: %v", err)
	}
}

// run starts the process on s.Addr and waits until it answers PING.
func (s *Server) run() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--bind", "127.0.0.1", "--port", port}
	if s.tls {
		args = []string{"--bind", "127.0.0.1", "--port", "0", "--tls-port", port}
	}
	args = append(args,
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	)
	args = append(args, s.args...)
	if s.conf != "" {
		args = append([]string{s.conf}, args...)
	}
	// The log file is appended to: it keeps every run of the server, for
	// failures after a restart.
	p, err := proc.Start(proc.Options{Name: "redis-server", Path: s.bin, Args: args, LogFile: s.logPath})
	if err != nil {
		return err
	}
	if err := proc.WaitReady(context.Background(), "redis-server on "+s.Addr, p.Exited,
		func(context.Context) error { return ping(s.Addr, s.probe) }); err != nil {
		_ = p.Stop()
		return fmt.Errorf("%s: %w\n%s", s.bin, err, readLog(s.logPath))
	}
	s.proc = p
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	// redis-server exits at once on SIGTERM; Stop kills it after a while.
	_ = s.proc.Stop()
	s.proc = nil
}

func freePort() (int, error) { return proc.FreePort() }

// probe is how the readiness check talks to a server.
type probe struct {
	tls *tls.Config // nil for plain TCP
	// password, when set, is sent with AUTH before PING, as user's when user is
	// set and as the default user's otherwise.
	user, password string
}

func ping(addr string, p probe) error {
	dialer := &net.Dialer{Timeout: time.Second}
	var conn net.Conn
	var err error
	if p.tls != nil {
		conn, err = tls.DialWithDialer(dialer, "tcp", addr, p.tls)
	} else {
		conn, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(conn)
	if p.password != "" {
		auth := []string{"AUTH", p.password}
		if p.user != "" {
			auth = []string{"AUTH", p.user, p.password}
		}
		if err := expect(conn, r, auth, "+OK"); err != nil {
			return err
		}
	}
	return expect(conn, r, []string{"PING"}, "+PONG")
}

// expect sends one command and checks its one-line reply.
func expect(conn net.Conn, r *bufio.Reader, args []string, want string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(line); got != want {
		return errors.New(args[0] + " answered " + got)
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

// Client returns a go-redis client to s with administrator rights (the default
// user, over TLS when s speaks it), for a test to inspect or disturb the server:
// SCRIPT FLUSH, WAIT, FLUSHALL. It is closed by tb.Cleanup.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:      s.Addr,
		TLSConfig: s.probe.tls,
		Username:  s.probe.user,
		Password:  s.probe.password,
		// Admin commands from a test go straight to the server, and an error
		// shows at once.
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
