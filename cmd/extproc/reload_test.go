package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Policies the reload tests switch between: before, tools/call is unlimited
// (only resources/read is); after, it is limited. What the processor says about a
// tools/call tells which one is in force.
const (
	policyBefore = `
server: github
rateLimiting:
  methods:
    - name: resources/read
      shared: {maxTokens: 100, refillPeriod: 1m}
`
	policyAfter = `
server: github
rateLimiting:
  shared: {maxTokens: 100, refillPeriod: 1m}
`
)

// configMapDir lays out a policy as the kubelet mounts a ConfigMap key:
//
//	dir/policy.yaml -> ..data/policy.yaml
//	dir/..data      -> ..2026_11_27_10_00_00.000000001
//	dir/..2026_11_27_10_00_00.000000001/policy.yaml
//
// and updates it the way the kubelet's AtomicWriter does: a new timestamped
// directory, a new symlink renamed over ..data, the old directory removed. The
// file's own path never changes and nothing is written to it.
type configMapDir struct {
	t       *testing.T
	dir     string
	current string // the timestamped directory ..data points at
	version int
}

func newConfigMapDir(t *testing.T, content string) *configMapDir {
	c := &configMapDir{t: t, dir: t.TempDir()}
	c.update(content)
	if err := os.Symlink(filepath.Join("..data", "policy.yaml"), filepath.Join(c.dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMapDir) path() string { return filepath.Join(c.dir, "policy.yaml") }

func (c *configMapDir) update(content string) {
	t := c.t
	t.Helper()
	c.version++
	ts := fmt.Sprintf("..2026_11_27_10_00_00.%09d", c.version)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, ts, "policy.yaml"), []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if c.current != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, c.current)); err != nil {
			t.Fatal(err)
		}
	}
	c.current = ts
}

func TestReloadAppliesANewPolicyAndKeepsItWhenTheNextIsInvalid(t *testing.T) {
	tests := []struct {
		name string
		poll time.Duration
		// setup writes content and returns the --config path and how to change it.
		setup func(t *testing.T, content string) (path string, change func(content string))
	}{
		{
			name: "file rewritten in place",
			// Two polls that agree apply a change. At 5 ms a loaded machine could
			// pause the writer between truncate and write for two polls, and the
			// empty file was then reported as a failed reload (the flake this
			// case had); 50 ms leaves the write that margin.
			poll: 50 * time.Millisecond,
			setup: func(t *testing.T, content string) (string, func(string)) {
				file := writeFile(t, "policy.yaml", content)
				return file, func(c string) {
					// Truncate and write, as editors and `cat >` do: a poll may see
					// the file empty or half-written.
					if err := os.WriteFile(file, []byte(strings.TrimLeft(c, "\n")), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			},
		},
		{
			name: "Kubernetes ConfigMap ..data symlink swapped",
			poll: 5 * time.Millisecond,
			setup: func(t *testing.T, content string) (string, func(string)) {
				cm := newConfigMapDir(t, content)
				return cm.path(), cm.update
			},
		},
		{
			name: "SIGHUP",
			poll: time.Hour, // only the signal can trigger the reload
			setup: func(t *testing.T, content string) (string, func(string)) {
				file := writeFile(t, "policy.yaml", content)
				return file, func(c string) {
					replaceFile(t, file, c)
					if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
						t.Fatal(err)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			path, change := tt.setup(t, policyBefore)
			target, admin, logs := startServe(ctx, t, path, tt.poll)
			ep := dialExtProc(t, target)

			if got := ep.decision(ctx, t, toolsCall); got != "unlimited" {
				t.Fatalf("tools/call before the reload: got decision %q, want unlimited", got)
			}
			change(policyAfter)
			logs.waitNth(ctx, t, "policy reloaded", 1)
			if got := ep.decision(ctx, t, toolsCall); got != "allowed" {
				t.Errorf("tools/call after the reload: got decision %q, want allowed (the new policy)", got)
			}

			change(invalidPolicy)
			rec := logs.waitNth(ctx, t, "policy reload failed; keeping the policy in force", 1)
			if p := fmt.Sprint(rec["problems"]); !strings.Contains(p, "rateLimiting.shared.maxTokens") || !strings.Contains(p, "rateLimiting.bogus") {
				t.Errorf("logged problems: got %s, want both of the file's problems with their paths", p)
			}
			if got := ep.decision(ctx, t, toolsCall); got != "allowed" {
				t.Errorf("tools/call after an invalid file: got decision %q, want allowed (the policy in force)", got)
			}
			_, body := get(ctx, t, admin+"/metrics")
			for _, want := range []string{
				`mcp_ratelimit_config_reloads_total{result="success"} 1`,
				`mcp_ratelimit_config_reloads_total{result="failure"} 1`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("got /metrics without %q, want it", want)
				}
			}
		})
	}
}

// startServe runs serve in-process with --config path and the given poll
// interval, until the test ends; it returns once the server is ready.
func startServe(ctx context.Context, t *testing.T, path string, poll time.Duration) (target, admin string, logs *logRecords) {
	t.Helper()
	o, err := parseFlags([]string{"--config", path, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	o.pollInterval = poll
	logs = newLogRecords(t)
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- serve(sctx, o, newLogger(logs, o)) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: got error %v, want nil", err)
		}
	})
	target, admin = logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready") // SIGHUP is handled from then on
	return target, admin, logs
}

const toolsCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{}}}`

// extProcClient plays Envoy's part of the ext_proc protocol.
type extProcClient struct {
	c extprocv3.ExternalProcessorClient
}

func dialExtProc(t *testing.T, target string) extProcClient {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", target, err)
	}
	t.Cleanup(func() { conn.Close() })
	return extProcClient{extprocv3.NewExternalProcessorClient(conn)}
}

// open starts a stream for a POST /mcp and sends its headers, as Envoy does
// before it has buffered the body; it waits for the headers' answer.
func (e extProcClient) open(ctx context.Context, t *testing.T) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	return e.openWith(ctx, t)
}

// openWith is open with extra request headers, given as name, value pairs.
func (e extProcClient) openWith(ctx context.Context, t *testing.T, headers ...string) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	s, err := e.c.Process(ctx)
	if err != nil {
		t.Fatalf("open ext_proc stream: %v", err)
	}
	hdr := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	hs := []*corev3.HeaderValue{
		hdr(":method", "POST"), hdr(":path", "/mcp"), hdr(":authority", "mcp.example.com"),
		hdr("content-type", "application/json"),
	}
	for i := 0; i+1 < len(headers); i += 2 {
		hs = append(hs, hdr(headers[i], headers[i+1]))
	}
	err = s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: hs}},
	}})
	if err != nil {
		t.Fatalf("send request headers: %v", err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatalf("answer to the request headers: %v", err)
	}
	if resp.GetRequestHeaders() == nil {
		t.Fatalf("answer to the request headers: got %v, want a headers response", resp)
	}
	return s
}

// finish sends the request body on s and returns the answer.
func finish(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient, body string) (*extprocv3.ProcessingResponse, error) {
	t.Helper()
	if err := s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true},
	}}); err != nil {
		return nil, fmt.Errorf("send request body: %w", err)
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, fmt.Errorf("answer to the request body: %w", err)
	}
	if err := s.CloseSend(); err != nil {
		return nil, fmt.Errorf("close the stream: %w", err)
	}
	return resp, nil
}

// decision sends one request with body and returns the decision the processor
// put in the mcp_ratelimit dynamic metadata.
func (e extProcClient) decision(ctx context.Context, t *testing.T, body string) string {
	t.Helper()
	resp, err := finish(t, e.open(ctx, t), body)
	if err != nil {
		t.Fatal(err)
	}
	return metadataDecision(resp)
}

func metadataDecision(resp *extprocv3.ProcessingResponse) string {
	ns := resp.GetDynamicMetadata().GetFields()["mcp_ratelimit"].GetStructValue()
	return ns.GetFields()["decision"].GetStringValue()
}
