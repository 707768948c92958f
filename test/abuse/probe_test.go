package abuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

const (
	// probeEvery is how often the probe starts an exchange during an attack
	// (the next waits if one runs longer).
	probeEvery = 20 * time.Millisecond
	// probeDeadline only catches a hang: an exchange takes about a millisecond
	// here, and Envoy's shipped message_timeout is far shorter than this.
	probeDeadline = 5 * time.Second
)

// probeCall is the tools/call the probe sends: a search the policy limits, so
// that it is read and decided, not passed through.
const probeCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"probe"}}}`

// dialProbe connects a grpc-go client to addr, as Envoy would connect.
func dialProbe(t *testing.T, addr string) extprocv3.ExternalProcessorClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

// exchange is one Envoy request as the shipped configuration sends it: request
// headers, then the whole body buffered. It wants the body let through
// (the bucket never empties) and the stream ended cleanly.
func exchange(ctx context.Context, c extprocv3.ExternalProcessorClient) error {
	ctx, cancel := context.WithTimeout(ctx, probeDeadline)
	defer cancel()
	stream, err := c.Process(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	hm := &corev3.HeaderMap{}
	for _, kv := range [][2]string{{":method", "POST"}, {":authority", "mcp.example.com"}, {":path", "/mcp"}, {"content-type", "application/json"}} {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{
		Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED},
	}); err != nil {
		return fmt.Errorf("send headers: %w", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("answer to headers: %w", err)
	}
	if resp.GetRequestHeaders() == nil {
		return fmt.Errorf("answer to headers: got %v, want a request_headers response", resp)
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(probeCall), EndOfStream: true}}}); err != nil {
		return fmt.Errorf("send body: %w", err)
	}
	if resp, err = stream.Recv(); err != nil {
		return fmt.Errorf("answer to body: %w", err)
	}
	if resp.GetRequestBody() == nil {
		return fmt.Errorf("answer to body: got %v, want a request_body response (allowed)", resp)
	}
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the exchange: got %v, want the stream ended cleanly", err)
	}
	return nil
}

// probeStats is what the probe saw during one attack.
type probeStats struct {
	mu        sync.Mutex
	latencies []time.Duration // of the exchanges that completed
	failures  []error
	peakRSS   int64
	rssErr    error
}

func (s *probeStats) record(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failures = append(s.failures, err)
		return
	}
	s.latencies = append(s.latencies, d)
}

func (s *probeStats) sampleRSS(e *harness.Extproc) {
	rss, err := e.RSS()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.rssErr = err
		return
	}
	s.peakRSS = max(s.peakRSS, rss)
}

// quantile returns the q-quantile of sorted, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// mib formats bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// underAttack runs attack against e while probing it, then checks that e is
// alive, that its RSS (sampled at every probe and at the end) stayed under
// rssBound, that every probe completed, and that a new client still gets an
// answer. It logs RSS before, peak and after, and the probe's latencies.
func underAttack(t *testing.T, e *harness.Extproc, rssBound int64, attack func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	probe := dialProbe(t, e.GRPCAddr)
	// The first exchange opens the probe's connection before the attack starts,
	// as Envoy's is open before an attacker arrives.
	if err := exchange(ctx, probe); err != nil {
		t.Fatalf("probe before the attack: %v", err)
	}
	before, err := e.RSS()
	if err != nil {
		t.Fatal(err)
	}

	stats := &probeStats{peakRSS: before}
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probing sync.WaitGroup
	every := func(f func()) {
		probing.Go(func() {
			tick := time.NewTicker(probeEvery)
			defer tick.Stop()
			for {
				f()
				select {
				case <-probeCtx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	every(func() {
		start := time.Now()
		// Not canceled when the probe stops: the last exchange runs to its end.
		err := exchange(context.WithoutCancel(probeCtx), probe)
		stats.record(time.Since(start), err)
	})
	// Sampled on its own, so that an exchange held up by the attack does not
	// hide the memory peak.
	every(func() { stats.sampleRSS(e) })

	attackStart := time.Now()
	attack()
	attackTook := time.Since(attackStart)
	stopProbe()
	probing.Wait()
	stats.sampleRSS(e)

	after, rssErr := e.RSS()
	slices.Sort(stats.latencies)
	t.Logf("attack took %v; RSS before %s, peak %s, after %s (bound %s)",
		attackTook.Round(time.Millisecond), mib(before), mib(stats.peakRSS), mib(after), mib(rssBound))
	t.Logf("probe: %d exchanges, %d failed; p50 %v, p99 %v, max %v", len(stats.latencies)+len(stats.failures), len(stats.failures),
		quantile(stats.latencies, 0.50).Round(10*time.Microsecond), quantile(stats.latencies, 0.99).Round(10*time.Microsecond),
		quantile(stats.latencies, 1).Round(10*time.Microsecond))

	if e.Exited() {
		t.Fatalf("extproc exited under the attack")
	}
	if rssErr != nil {
		t.Errorf("RSS after the attack: %v", rssErr)
	}
	if stats.rssErr != nil {
		t.Errorf("RSS during the attack: %v", stats.rssErr)
	}
	if stats.peakRSS >= rssBound {
		t.Errorf("peak RSS %s, want under %s", mib(stats.peakRSS), mib(rssBound))
	}
	for i, err := range stats.failures {
		if i == 5 {
			t.Errorf("... and %d more failed probes", len(stats.failures)-i)
			break
		}
		t.Errorf("probe during the attack: %v", err)
	}
	// A new connection, not only the one opened before the attack, must be served.
	if err := exchange(ctx, dialProbe(t, e.GRPCAddr)); err != nil {
		t.Errorf("probe on a new connection after the attack: %v", err)
	}
}
