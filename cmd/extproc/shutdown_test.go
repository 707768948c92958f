package main

import (
	"context"
	"io"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

// startBinary starts the built extproc with args and returns its JSON log and a
// channel with its exit error; the process is killed if the test ends first.
func startBinary(ctx context.Context, t *testing.T, bin string, args ...string) (*exec.Cmd, *logRecords, <-chan error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{}
	logs := newLogRecords(t)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(logs, stderr) // EOF when the process exits
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return cmd, logs, exited
}

// waitExit returns the process's exit error, failing if ctx ends first.
func waitExit(ctx context.Context, t *testing.T, exited <-chan error) error {
	t.Helper()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
		t.Fatal("the process did not exit")
		return nil
	}
}

func TestBinaryReadinessAndShutdown(t *testing.T) {
	bin := buildBinary(t)
	policy := writeFile(t, "policy.yaml", validPolicy)

	t.Run("readyz is 503 until the store answered", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		gate := startGateProxy(t, redistest.Start(t))
		_, logs, _ := startBinary(ctx, t, bin, "--config", policy, "--grpc-addr", "127.0.0.1:0",
			"--admin-addr", "127.0.0.1:0", "--redis-url", "redis://"+gate.addr+"/0")
		a := logs.wait(ctx, t, "admin listening")
		admin := "http://" + a["addr"].(string)
		select {
		case <-gate.asked: // the start-up PING is waiting for its answer
		case <-ctx.Done():
			t.Fatal("extproc never sent its start-up PING")
		}
		if code, _ := get(ctx, t, admin+"/readyz"); code != 503 {
			t.Errorf("GET /readyz while the PING waits: got %d, want 503", code)
		}
		if code, _ := get(ctx, t, admin+"/healthz"); code != 200 {
			t.Errorf("GET /healthz while the PING waits: got %d, want 200", code)
		}
		if logs.has("ready") {
			t.Error(`got "ready" logged before Redis answered, want it after`)
		}
		gate.open()
		waitReadyz(ctx, t, admin)
		if !logs.has("ready") {
			t.Error(`/readyz answered 200 before "ready" was logged`)
		}
	})

	t.Run("SIGTERM: NOT_SERVING, the stream in flight finishes, exit 0", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		// A grace far above what the stream needs: the process must exit because
		// the stream finished, not because the grace ran out.
		cmd, logs, exited := startBinary(ctx, t, bin, "--config", policy, "--grpc-addr", "127.0.0.1:0",
			"--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "20s")
		target, admin := logs.addrs(ctx, t)
		logs.wait(ctx, t, "ready")

		hc, _ := healthClient(t, target)
		wctx, stopWatch := context.WithCancel(ctx)
		watch, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: extProcService})
		if err != nil {
			t.Fatal(err)
		}
		if st := recvStatus(t, watch); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health before SIGTERM: got %v, want SERVING", st)
		}
		inFlight := dialExtProc(t, target).open(ctx, t) // headers sent, body not yet

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if st := recvStatus(t, watch); st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health after SIGTERM: got %v, want NOT_SERVING", st)
		}
		stopWatch() // a Watch is an in-flight stream too; only the ext_proc one stays
		if code, _ := get(ctx, t, admin+"/readyz"); code != 503 {
			t.Errorf("GET /readyz during the drain: got %d, want 503", code)
		}

		resp, err := finish(t, inFlight, toolsCall)
		if err != nil {
			t.Fatalf("stream in flight at SIGTERM: %v, want its answer", err)
		}
		if got := metadataDecision(resp); got != "allowed" || resp.GetRequestBody() == nil {
			t.Errorf("answer to the body sent after SIGTERM: got %v (decision %q), want a body response, allowed", resp, got)
		}
		if err := waitExit(ctx, t, exited); err != nil {
			t.Errorf("exit after SIGTERM: got %v, want code 0", err)
		}
		if logs.has("grace period over: closing the streams still open") {
			t.Error("got the streams cut at the grace's end, want the drain to finish first")
		}
	})

	t.Run("SIGTERM: a stream that never finishes is cut after --shutdown-timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		cmd, logs, exited := startBinary(ctx, t, bin, "--config", policy, "--grpc-addr", "127.0.0.1:0",
			"--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "300ms")
		target, _ := logs.addrs(ctx, t)
		logs.wait(ctx, t, "ready")
		stuck := dialExtProc(t, target).open(ctx, t) // its body never comes

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Bounded by testTimeout: without the grace, GracefulStop would wait forever.
		if err := waitExit(ctx, t, exited); err != nil {
			t.Errorf("exit after SIGTERM: got %v, want code 0", err)
		}
		rec := logs.wait(ctx, t, "grace period over: closing the streams still open")
		if rec["grace"] != "300ms" {
			t.Errorf("grace logged: got %v, want 300ms", rec["grace"])
		}
		if _, err := stuck.Recv(); err == nil {
			t.Error("stuck stream after the grace: got a message, want it closed with an error")
		}
	})
}

// gateProxy forwards TCP to a Redis, but holds Redis's replies until open is
// called: a Redis that is slow to answer the start-up PING, as long as the test
// wants.
type gateProxy struct {
	addr   string
	asked  chan struct{} // closed when the first request bytes arrived
	opened chan struct{}
	once   sync.Once
}

func startGateProxy(t *testing.T, redisAddr string) *gateProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gateProxy{addr: lis.Addr().String(), asked: make(chan struct{}), opened: make(chan struct{})}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	var askedOnce sync.Once
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", redisAddr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						askedOnce.Do(func() { close(g.asked) })
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				<-g.opened
				io.Copy(c, up)
			}()
		}
	}()
	t.Cleanup(func() {
		g.open()
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return g
}

func (g *gateProxy) open() { g.once.Do(func() { close(g.opened) }) }

func TestBinarySurvivesSIGHUPWithoutConfig(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	cmd, logs, exited := startBinary(ctx, t, bin, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	_, admin := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")
	// Go's default for SIGHUP ends the process; a reload signal must not.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(ctx, t, admin+"/healthz"); code != 200 {
		t.Fatalf("GET /healthz after SIGHUP: got %d, want 200", code)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(ctx, t, exited); err != nil {
		t.Errorf("exit after SIGTERM: got %v, want code 0 (the SIGHUP must not have ended it)", err)
	}
}
