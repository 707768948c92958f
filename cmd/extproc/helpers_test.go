package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// logRecords is an io.Writer for JSON slog output that lets a test wait for a
// record by its message: how tests learn the addresses of :0 listeners.
type logRecords struct {
	mu      sync.Mutex
	raw     bytes.Buffer
	pending []byte
	recs    []map[string]any
	changed chan struct{} // closed and replaced whenever a record arrives
}

func newLogRecords(t *testing.T) *logRecords {
	l := &logRecords{changed: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process log:\n%s", l.String())
		}
	})
	return l
}

func (l *logRecords) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	l.pending = append(l.pending, p...)
	for {
		i := bytes.IndexByte(l.pending, '\n')
		if i < 0 {
			break
		}
		var rec map[string]any
		if json.Unmarshal(l.pending[:i], &rec) == nil {
			l.recs = append(l.recs, rec)
		}
		l.pending = l.pending[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logRecords) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// wait returns the first record whose msg is msg, waiting for it until ctx ends.
func (l *logRecords) wait(ctx context.Context, t *testing.T, msg string) map[string]any {
	t.Helper()
	return l.waitNth(ctx, t, msg, 1)
}

// waitNth waits until n records whose msg is msg were logged and returns the
// n-th.
func (l *logRecords) waitNth(ctx context.Context, t *testing.T, msg string, n int) map[string]any {
	t.Helper()
	for {
		l.mu.Lock()
		seen := 0
		for _, r := range l.recs {
			if r["msg"] == msg {
				if seen++; seen == n {
					l.mu.Unlock()
					return r
				}
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("log record %q #%d: never came (%v)\n%s", msg, n, ctx.Err(), l.String())
		}
	}
}

// has reports whether a record with message msg was logged.
func (l *logRecords) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r["msg"] == msg {
			return true
		}
	}
	return false
}

// addrs waits until the server logged its listening addresses.
func (l *logRecords) addrs(ctx context.Context, t *testing.T) (grpcTarget, adminURL string) {
	t.Helper()
	g := l.wait(ctx, t, "grpc listening")
	grpcTarget, _ = g["addr"].(string)
	if g["network"] == "unix" {
		grpcTarget = "unix://" + grpcTarget
	}
	a := l.wait(ctx, t, "admin listening")
	addr, _ := a["addr"].(string)
	return grpcTarget, "http://" + addr
}

// healthClient connects to a gRPC target; the connection closes with the test.
func healthClient(t *testing.T, target string) (healthpb.HealthClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", target, err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn), conn
}

// checkHealth asks for the status of service, failing the test on an error.
func checkHealth(ctx context.Context, t *testing.T, c healthpb.HealthClient, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return resp.GetStatus()
}

// get fetches url and returns its status code and body.
// waitReadyz polls admin's /readyz until it answers 200. "ready" is logged just
// before /readyz turns 200 (serve.go), so a test that has seen that line must
// still poll.
func waitReadyz(ctx context.Context, t *testing.T, admin string) {
	t.Helper()
	for {
		code, _ := get(ctx, t, admin+"/readyz")
		if code == 200 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("GET /readyz: got %d until the test timed out, want 200", code)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(strings.TrimLeft(content, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const validPolicy = `
server: github
rateLimiting:
  shared: {maxTokens: 100, refillPeriod: 1m}
  tools:
    - name: search
      perUser: {maxTokens: 2, refillPeriod: 1m}
`

// invalidPolicy has two problems: an unknown field and a non-positive maxTokens.
const invalidPolicy = `
server: github
rateLimiting:
  shared: {maxTokens: 0, refillPeriod: 1m}
  bogus: 1
`
