package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

func TestNullProcessorAnswersEachMessageWithAContinueOfItsKind(t *testing.T) {
	for _, transport := range []string{"grpc-go"} {
		t.Run(transport, func(t *testing.T) { testNullProcessor(t, transport) })
	}
}

func testNullProcessor(t *testing.T, transport string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	grpcAddr, adminAddr := freeAddr(t), freeAddr(t)
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runNullProcessor(srvCtx, []string{"-addr", grpcAddr, "-admin-addr", adminAddr})
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

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
