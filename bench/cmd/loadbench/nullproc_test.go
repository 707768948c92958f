package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcp-ratelimit/extproc/internal/processor"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

var nullTransports = []string{transportGRPCGo, transportConnect}

// startNullProcessor runs the nullproc subcommand on transport in this process
// until the test ends and returns its gRPC address once /readyz answers.
func startNullProcessor(ctx context.Context, t *testing.T, transport string) string {
	t.Helper()
	grpcAddr, adminAddr := freeAddr(t), freeAddr(t)
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runNullProcessor(srvCtx, []string{"-addr", grpcAddr, "-admin-addr", adminAddr, "-transport", transport})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("nullproc: %v", err)
		}
	})
	if err := harness.WaitFor(ctx, "nullproc", nil, func(ctx context.Context) error {
		return harness.HTTPOK(ctx, "http://"+adminAddr+"/readyz")
	}); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	return grpcAddr
}

func TestNullProcessorAnswersEachMessageWithAContinueOfItsKind(t *testing.T) {
	for _, transport := range nullTransports {
		t.Run(transport, func(t *testing.T) { testNullProcessor(t, transport) })
	}
}

func testNullProcessor(t *testing.T, transport string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(startNullProcessor(ctx, t, transport), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		send *extprocv3.ProcessingRequest
		want string
	}{
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}}, "request_headers"},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("{}"), EndOfStream: true}}}, "request_body"},
		{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}, "request_trailers"},
	} {
		if err := stream.Send(tc.send); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got := "other"
		switch resp.Response.(type) {
		case *extprocv3.ProcessingResponse_RequestHeaders:
			got = "request_headers"
		case *extprocv3.ProcessingResponse_RequestBody:
			got = "request_body"
		case *extprocv3.ProcessingResponse_RequestTrailers:
			got = "request_trailers"
		}
		if got != tc.want || resp.GetImmediateResponse() != nil {
			t.Errorf("answer to %s: got %s %v, want a bare %s continue", tc.want, got, resp, tc.want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	// The server ends the stream with an OK status once it has read the close.
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: got %v, want io.EOF", err)
	}
}

// (n) and (n-connect) compare two transports' code only if their settings
// are the same: the stream and connection windows decide how many frames a
// stream costs, and the stream limit how many connections Envoy opens.
func TestNullProcessorTransportsAdvertiseExtprocsWindowsAndStreamLimit(t *testing.T) {
	for _, transport := range nullTransports {
		t.Run(transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", startNullProcessor(ctx, t, transport))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			fr := http2.NewFramer(c, c)
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			settings := map[http2.SettingID]uint32{}
			var connIncrement uint32
			for seen := false; !seen || connIncrement == 0; {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("after settings %v, connection window update %d: %v", settings, connIncrement, err)
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if f.IsAck() {
						continue
					}
					seen = true
					if err := f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil }); err != nil {
						t.Fatal(err)
					}
				case *http2.WindowUpdateFrame:
					if f.StreamID == 0 {
						connIncrement = f.Increment
					}
				}
			}
			const initialWindow = 65535 // every HTTP/2 window's size before SETTINGS and updates
			if got := settings[http2.SettingInitialWindowSize]; got != processor.StreamWindowBytes {
				t.Errorf("stream window: got %d, want %d", got, processor.StreamWindowBytes)
			}
			if got := connIncrement + initialWindow; got != processor.ConnWindowBytes {
				t.Errorf("connection window: got %d, want %d", got, processor.ConnWindowBytes)
			}
			if got := settings[http2.SettingMaxConcurrentStreams]; got != processor.DefaultMaxConcurrentStreams {
				t.Errorf("max concurrent streams: got %d, want %d", got, processor.DefaultMaxConcurrentStreams)
			}
		})
	}
}

// Envoy's ext_proc filter must reach either transport and get its answers:
// with failure_mode_allow a processor Envoy cannot talk to lets every request
// through, and that would look like the cheapest transport.
func TestNullProcessorConfigsAnswerEnvoyOnEachTransport(t *testing.T) {
	envoyBin := harness.EnvoyTool.Require(t) // fails with CI=true, skips otherwise
	upstream := httptest.NewServer(http.HandlerFunc(fixedResult))
	defer upstream.Close()
	for _, name := range []string{"n", "n-connect"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sc, _ := scenarioByName(name)
			transport := sc.Transport
			if transport == "" {
				transport = transportGRPCGo
			}
			_, port, err := net.SplitHostPort(startNullProcessor(ctx, t, transport))
			if err != nil {
				t.Fatal(err)
			}
			const requests = 3
			counts := countersAfterRequests(ctx, t, envoyBin, upstream, name, sc, port, requests)
			// Two messages a request, headers and the buffered body, each answered.
			want := map[string]int64{"http.mcp.ext_proc.stream_msgs_sent": 2 * requests,
				"http.mcp.ext_proc.stream_msgs_received": 2 * requests}
			for _, c := range []string{"http.mcp.ext_proc.stream_msgs_sent", "http.mcp.ext_proc.stream_msgs_received",
				"http.mcp.ext_proc.streams_failed", "http.mcp.ext_proc.message_timeouts", "http.mcp.ext_proc.failure_mode_allowed"} {
				if counts[c] != want[c] {
					t.Errorf("%s: got %d, want %d (all counters: %v)", c, counts[c], want[c], counts)
				}
			}
		})
	}
}

// countersAfterRequests runs sc's Envoy in front of upstream with its
// processor (or rate-limit service) on port, sends requests tools/calls that
// must each get 200, and returns Envoy's counters of sc's filter.
func countersAfterRequests(ctx context.Context, t *testing.T, envoyBin string, upstream *httptest.Server, name string, sc scenario, port string, requests int) map[string]int64 {
	t.Helper()
	r := &runner{f: flags{envoyConcurrency: 1}, dir: t.TempDir(), log: io.Discard, envoyBin: envoyBin,
		upstreamPort: upstream.Listener.Addr().(*net.TCPAddr).Port}
	p := envoyParamsFor(sc)
	var err error
	if p.ExtprocPort, err = strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	e, err := r.startEnvoy(ctx, name, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("envoy log:\n%s", e.tail())
		}
	})
	for i := range requests {
		status, err := post(ctx, http.DefaultClient, "http://"+e.listen+"/mcp", "u", toolsCall(nil, i+1, toolEcho))
		if err != nil || status != http.StatusOK {
			t.Fatalf("request %d: got status %d, error %v; want 200", i, status, err)
		}
	}
	counts, err := e.counters(ctx, statsFilter(sc.Filter))
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}
