package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// startNullRLS runs the nullrls subcommand in this process until the test ends
// and returns its gRPC address once /readyz answers.
func startNullRLS(ctx context.Context, t *testing.T) string {
	t.Helper()
	grpcAddr, adminAddr := freeAddr(t), freeAddr(t)
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runNullRLS(srvCtx, []string{"-addr", grpcAddr, "-admin-addr", adminAddr}) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("nullrls: %v", err)
		}
	})
	if err := harness.WaitFor(ctx, "nullrls", nil, func(ctx context.Context) error {
		return harness.HTTPOK(ctx, "http://"+adminAddr+"/readyz")
	}); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	return grpcAddr
}

func TestNullRLSAnswersOKToShouldRateLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(startNullRLS(ctx, t), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// What Envoy sends for (r)'s remote_address action.
	req := &rlsv3.RateLimitRequest{Domain: "mcp", HitsAddend: 1, Descriptors: []*commonrlv3.RateLimitDescriptor{{
		Entries: []*commonrlv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "127.0.0.1"}},
	}}}
	resp, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, req)
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("got overall code %v, want OK", resp.GetOverallCode())
	}
}

// (r) measures Envoy's global rate-limit path only if every request reaches the
// rate-limit service once, and is answered: a route action that produced no
// descriptor would skip the call, and a failed call would be let through
// (failure_mode_deny false), both looking cheaper than the path is.
func TestRateLimitConfigCallsTheServiceOncePerRequest(t *testing.T) {
	envoyBin := harness.EnvoyTool.Require(t) // fails with CI=true, skips otherwise
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rlsAddr := startNullRLS(ctx, t)
	upstream := httptest.NewServer(http.HandlerFunc(fixedResult))
	defer upstream.Close()

	sc, _ := scenarioByName("r")
	_, port, err := net.SplitHostPort(rlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	const requests = 3
	counts := countersAfterRequests(ctx, t, envoyBin, upstream, "r", sc, port, requests)
	want := map[string]int64{"cluster.mcp_upstream.ratelimit.ok": requests}
	for _, name := range []string{"cluster.mcp_upstream.ratelimit.ok", "cluster.mcp_upstream.ratelimit.error",
		"cluster.mcp_upstream.ratelimit.failure_mode_allowed", "cluster.mcp_upstream.ratelimit.over_limit"} {
		if counts[name] != want[name] {
			t.Errorf("%s: got %d, want %d (all counters: %v)", name, counts[name], want[name], counts)
		}
	}
}
