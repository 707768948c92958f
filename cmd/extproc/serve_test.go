package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

// testTimeout guards against hangs; no test waits for it to pass.
const testTimeout = 30 * time.Second

// startRun runs the server in-process and returns its log and a channel with
// run's result. Cancelling the returned context shuts it down.
func startRun(t *testing.T, args ...string) (context.CancelFunc, *logRecords, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	logs := newLogRecords(t)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- run(ctx, args, new(strings.Builder), logs, mapEnv(nil))
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return cancel, logs, done
}

// waitDone returns run's result.
func waitDone(ctx context.Context, t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatal("run did not return")
		return nil
	}
}

func TestRunServesHealthAndShutsDownOnCancel(t *testing.T) {
	ctx, cancelTest := context.WithTimeout(t.Context(), testTimeout)
	defer cancelTest()
	stop, logs, done := startRun(t, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	target, admin := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")

	hc, conn := healthClient(t, target)
	for _, svc := range []string{"", extProcService} {
		if got := checkHealth(ctx, t, hc, svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: got %v, want SERVING", svc, got)
		}
	}
	waitReadyz(ctx, t, admin)
	for _, c := range []struct{ path, body string }{{"/healthz", "ok"}, {"/readyz", "ok"}} {
		code, body := get(ctx, t, admin+c.path)
		if code != 200 || strings.TrimSpace(body) != c.body {
			t.Errorf("GET %s: got %d %q, want 200 %q", c.path, code, body, c.body)
		}
	}
	if code, body := get(ctx, t, admin+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics: got %d and no go_goroutines, want 200 with Go metrics", code)
	}
	if !logs.has("no --config: nothing is limited") {
		t.Error("got no warning about the missing --config, want one")
	}

	// A Watch stream is an in-flight stream: it sees NOT_SERVING, and holds the
	// graceful stop (and so the admin server) open until it ends.
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: extProcService})
	if err != nil {
		t.Fatal(err)
	}
	if st := recvStatus(t, watch); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: got %v, want SERVING first", st)
	}
	stop()
	if st := recvStatus(t, watch); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watch after shutdown began: got %v, want NOT_SERVING", st)
	}
	if code, _ := get(ctx, t, admin+"/readyz"); code != 503 {
		t.Errorf("GET /readyz after shutdown began: got %d, want 503", code)
	}
	if code, _ := get(ctx, t, admin+"/healthz"); code != 200 {
		t.Errorf("GET /healthz during shutdown: got %d, want 200", code)
	}
	conn.Close()
	if err := waitDone(ctx, t, done); err != nil {
		t.Errorf("run: got error %v, want nil", err)
	}
	if logs.has("grace period over: closing the streams still open") {
		t.Error("got streams cut, want a graceful stop")
	}
}

func recvStatus(t *testing.T, w healthpb.Health_WatchClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := w.Recv()
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	return resp.GetStatus()
}

func TestRunCutsStreamsAfterTheShutdownTimeout(t *testing.T) {
	ctx, cancelTest := context.WithTimeout(t.Context(), testTimeout)
	defer cancelTest()
	stop, logs, done := startRun(t, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "1ms")
	target, _ := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")
	hc, _ := healthClient(t, target)
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvStatus(t, watch)

	stop() // the open Watch stream would hold a graceful stop forever
	if err := waitDone(ctx, t, done); err != nil {
		t.Errorf("run: got error %v, want nil", err)
	}
	if !logs.has("grace period over: closing the streams still open") {
		t.Error("got no log of the streams being cut, want one")
	}
}

func TestRunServesOnAUnixSocketReplacingAStaleOne(t *testing.T) {
	ctx, cancelTest := context.WithTimeout(t.Context(), testTimeout)
	defer cancelTest()
	// Socket paths are limited to ~108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "extproc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "x.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false) // leave the file, as a killed process would
	stale.Close()

	stop, logs, done := startRun(t, "--grpc-addr", "unix://"+sock, "--admin-addr", "127.0.0.1:0")
	target, _ := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")
	hc, _ := healthClient(t, target)
	if got := checkHealth(ctx, t, hc, ""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health over %s: got %v, want SERVING", target, got)
	}
	stop()
	if err := waitDone(ctx, t, done); err != nil {
		t.Errorf("run: got error %v, want nil", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after shutdown: got %v, want it removed", err)
	}
}

func TestRunRefusesASocketPathThatIsARegularFile(t *testing.T) {
	path := writeFile(t, "not-a-socket", "data")
	err := run(t.Context(), []string{"--grpc-addr", "unix://" + path, "--admin-addr", "127.0.0.1:0"},
		new(strings.Builder), newLogRecords(t), mapEnv(nil))
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("got error %v, want one saying the file is not a socket", err)
	}
	if _, statErr := os.Stat(path); statErr != nil {
		t.Errorf("got %v, want the file left alone", statErr)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return strconv.Itoa(port)
}

func TestRunFailsWhenRedisIsUnreachable(t *testing.T) {
	addr := "127.0.0.1:" + closedPort(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	args := []string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--redis-url", "redis://user:hunter2@" + addr + "/0"}
	err := run(ctx, args, new(strings.Builder), newLogRecords(t), mapEnv(map[string]string{"REDIS_PASSWORD": "t0ps3cret"}))
	if err == nil {
		t.Fatal("got nil error, want one")
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("got error %q, want it to name %s", err, addr)
	}
	for _, pw := range []string{"hunter2", "t0ps3cret"} {
		if strings.Contains(err.Error(), pw) {
			t.Errorf("got error %q, want no password in it", err)
		}
	}
}

func TestRunUsesRedisFromThePolicy(t *testing.T) {
	addr := redistest.Start(t)
	ctx, cancelTest := context.WithTimeout(t.Context(), testTimeout)
	defer cancelTest()
	policy := writeFile(t, "policy.yaml", validPolicy+"redis:\n  url: redis://"+addr+"/0\n")
	stop, logs, done := startRun(t, "--config", policy, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	rec := logs.wait(ctx, t, "store: redis")
	if got, want := rec["redis"], "redis://"+addr+"/0"; got != want {
		t.Errorf("store log: got redis=%v, want %v", got, want)
	}
	_, admin := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")
	waitReadyz(ctx, t, admin)
	stop()
	if err := waitDone(ctx, t, done); err != nil {
		t.Errorf("run: got error %v, want nil", err)
	}
}

// replaceFile swaps file's content in one rename, as Kubernetes does with a
// ConfigMap, so no poll can see it half-written.
func replaceFile(t *testing.T, file, content string) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.TrimLeft(content, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

func TestRunServesExtProcAndHealthOnOnePort(t *testing.T) {
	ctx, cancelTest := context.WithTimeout(t.Context(), testTimeout)
	defer cancelTest()
	_, logs, _ := startRun(t, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	target, _ := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")

	// A connection of ext_proc streams, as Envoy's, then one of health
	// checks, as the kubelet's.
	s := dialExtProc(t, target).open(ctx, t)
	resp, err := finish(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`)
	if err != nil || resp.GetRequestBody() == nil {
		t.Errorf("answer to the body: got %v, %v; want a body response", resp, err)
	}
	hc, _ := healthClient(t, target)
	if got := checkHealth(ctx, t, hc, extProcService); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %q: got %v, want SERVING", extProcService, got)
	}
}

func TestRunWithoutAnIdentityKeyWarnsThatIdentitiesCanBeRecovered(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	_, logs, _ := startRun(t, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	logs.wait(ctx, t, "ready")
	rec := logs.wait(ctx, t, noIdentityKeyWarning)
	if rec["level"] != "WARN" {
		t.Errorf("got level %v, want WARN", rec["level"])
	}
	if fix, _ := rec["fix"].(string); !strings.Contains(fix, "EXTPROC_IDENTITY_KEY") || !strings.Contains(fix, "--identity-key-file") {
		t.Errorf("got fix %q, want it to name EXTPROC_IDENTITY_KEY and --identity-key-file", fix)
	}
}

func TestRunWithAnIdentityKeyDoesNotWarn(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	key := writeFile(t, "identity.key", "0123456789abcdef0123456789abcdef\n")
	_, logs, _ := startRun(t, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--identity-key-file", key)
	logs.wait(ctx, t, "ready")
	logs.wait(ctx, t, "per-user bucket keys hash identities under the identity key")
	if logs.has(noIdentityKeyWarning) {
		t.Error("got the no-identity-key warning, want none")
	}
	if strings.Contains(logs.String(), "0123456789abcdef") {
		t.Error("got the identity key in the log, want it never logged")
	}
}

func TestRunKeysPerUserBucketsInRedisByTheIdentityKey(t *testing.T) {
	const identityKey = "0123456789abcdef0123456789abcdef"
	const user = "203.0.113.7"
	srv := redistest.StartServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	policy := writeFile(t, "policy.yaml", validPolicy+"identity: [{header: x-user-id}]\nredis:\n  url: redis://"+srv.Addr+"/0\n")
	keyFile := writeFile(t, "identity.key", identityKey+"\n")
	_, logs, _ := startRun(t, "--config", policy, "--identity-key-file", keyFile,
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	target, _ := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")

	s := dialExtProc(t, target).openWith(ctx, t, "x-user-id", user)
	if _, err := finish(t, s, toolsCall); err != nil {
		t.Fatal(err)
	}
	keys, err := srv.Client(t).Keys(ctx, "mcprl:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want, err := bucket.NewKeys([]byte(identityKey))
	if err != nil {
		t.Fatal(err)
	}
	perUser := want.Key("github", bucket.ScopeUserTool, "search", "header:"+user)
	if !slices.Contains(keys, perUser) {
		t.Errorf("got keys %q, want %q among them", keys, perUser)
	}
	for _, k := range keys {
		if strings.Contains(k, user) {
			t.Errorf("got key %q, want no key holding the identity", k)
		}
	}
}
