package grpclite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mcp-ratelimit/extproc/internal/grpclite"
)

// method is the bidirectional-streaming method the tests serve.
const method = "/grpclite.test.Echo/Stream"

// waitLimit bounds every wait for something that must happen; reaching it
// fails the test rather than hanging it.
const waitLimit = 10 * time.Second

var bidi = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

// liteServer is a grpclite.Server serving a loopback listener.
type liteServer struct {
	*grpclite.Server
	addr      string
	serveDone chan struct{} // closed when Serve returned, with serveErr
	serveErr  error
}

// startServer serves opts on 127.0.0.1 until the test ends; connections pass
// through accepted, if not nil, as they are accepted.
func startServer(t *testing.T, opts grpclite.Options) *liteServer {
	t.Helper()
	if opts.Method == "" {
		opts.Method = method
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &liteServer{Server: grpclite.New(opts), addr: ln.Addr().String(), serveDone: make(chan struct{})}
	go func() {
		defer close(s.serveDone)
		s.serveErr = s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Close()
		<-s.serveDone
		if !errors.Is(s.serveErr, grpclite.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", s.serveErr)
		}
	})
	return s
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func newStream(t *testing.T, ctx context.Context, cc *grpc.ClientConn) grpc.ClientStream {
	t.Helper()
	cs, err := cc.NewStream(ctx, bidi, method)
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	return cs
}

func send(cs grpc.ClientStream, b []byte) error {
	return cs.SendMsg(&wrapperspb.BytesValue{Value: b})
}

func recv(cs grpc.ClientStream) ([]byte, error) {
	m := new(wrapperspb.BytesValue)
	err := cs.RecvMsg(m)
	return m.GetValue(), err
}

// roundTrip sends b and returns the reply.
func roundTrip(t *testing.T, cs grpc.ClientStream, b []byte) []byte {
	t.Helper()
	if err := send(cs, b); err != nil {
		t.Fatalf("SendMsg: %v", err)
	}
	got, err := recv(cs)
	if err != nil {
		t.Fatalf("RecvMsg: %v", err)
	}
	return got
}

// finish half-closes the stream and expects it to end with status OK.
func finish(t *testing.T, cs grpc.ClientStream) {
	t.Helper()
	if err := cs.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if got, err := recv(cs); err != io.EOF {
		t.Fatalf("RecvMsg after CloseSend: got (%q, %v), want io.EOF", got, err)
	}
}

// wait fails the test unless ch is closed or receives within waitLimit.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// streamRecord is what a test handler saw of one stream.
type streamRecord struct {
	busy       atomic.Bool  // a message is unanswered
	dones      atomic.Int32 // Done calls
	ctxAtDone  atomic.Value // ctx.Err() when Done was called (errBox)
	messages   atomic.Int32
	overlapped atomic.Bool // Message was called while another was unanswered
}

type errBox struct{ err error }

func TestRepliesKeepMessageOrderPerStreamAcrossConcurrentStreams(t *testing.T) {
	grpclite.CheckLeaks(t)
	const streams, msgs = 100, 5

	var mu sync.Mutex
	var records []*streamRecord
	done := make(chan struct{}, 2*streams)
	s := startServer(t, grpclite.Options{Handler: func(ctx context.Context) grpclite.StreamHandler {
		r := &streamRecord{}
		mu.Lock()
		records = append(records, r)
		mu.Unlock()
		return &grpclite.HandlerFuncs{
			OnMessage: func(msg []byte, reply func([]byte, error)) {
				r.messages.Add(1)
				if !r.busy.CompareAndSwap(false, true) {
					r.overlapped.Store(true)
				}
				if err := ctx.Err(); err != nil {
					t.Errorf("stream context already ended in Message: %v", err)
				}
				answer := func() {
					r.busy.Store(false)
					reply(msg, nil)
				}
				if rand.IntN(4) == 0 {
					answer() // on the reading goroutine
					return
				}
				go func() {
					for range rand.IntN(200) {
						runtime.Gosched()
					}
					answer()
				}()
			},
			OnDone: func() {
				r.ctxAtDone.Store(errBox{ctx.Err()})
				r.dones.Add(1)
				done <- struct{}{}
			},
		}
	}})
	cc := dial(t, s.addr)

	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			cs, err := cc.NewStream(t.Context(), bidi, method)
			if err != nil {
				t.Errorf("stream %d: NewStream: %v", i, err)
				return
			}
			// All messages go out before any reply is read, so that they queue
			// behind the handler.
			for j := range msgs {
				if err := send(cs, fmt.Appendf(nil, "stream %d message %d", i, j)); err != nil {
					t.Errorf("stream %d: SendMsg %d: %v", i, j, err)
					return
				}
			}
			if err := cs.CloseSend(); err != nil {
				t.Errorf("stream %d: CloseSend: %v", i, err)
				return
			}
			for j := range msgs {
				got, err := recv(cs)
				if want := fmt.Sprintf("stream %d message %d", i, j); err != nil || string(got) != want {
					t.Errorf("stream %d: reply %d: got (%q, %v), want %q", i, j, got, err, want)
					return
				}
			}
			if got, err := recv(cs); err != io.EOF {
				t.Errorf("stream %d: after the last reply: got (%q, %v), want io.EOF", i, got, err)
			}
		})
	}
	wg.Wait()

	for range streams {
		wait(t, done, "Done of every stream")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(records) != streams {
		t.Fatalf("handler opened %d streams, want %d", len(records), streams)
	}
	for i, r := range records {
		if n := r.dones.Load(); n != 1 {
			t.Errorf("stream %d: Done called %d times, want 1", i, n)
		}
		if n := r.messages.Load(); n != msgs {
			t.Errorf("stream %d: Message called %d times, want %d", i, n, msgs)
		}
		if r.overlapped.Load() {
			t.Errorf("stream %d: Message called before the previous message was answered", i)
		}
		if b, _ := r.ctxAtDone.Load().(errBox); b.err == nil {
			t.Errorf("stream %d: ctx.Err() at Done = nil, want the stream's context cancelled", i)
		}
	}
}

// pattern returns n bytes that differ between any two offsets 256 bytes or more
// apart, so that lost, repeated or reordered frames show.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i ^ i>>8 ^ i>>16 ^ i>>24)
	}
	return b
}

// sizedHandler answers a request of 8 bytes (the reply's size, decimal,
// zero-padded) followed by pattern(n) with pattern(reply size).
func sizedHandler(context.Context) grpclite.StreamHandler {
	return &grpclite.HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
		go func() { // large work: off the reading goroutine
			var req wrapperspb.BytesValue
			if err := proto.Unmarshal(msg, &req); err != nil || len(req.Value) < 8 {
				reply(nil, status.Errorf(codes.InvalidArgument, "bad request: %v", err))
				return
			}
			var size int
			fmt.Sscanf(string(req.Value[:8]), "%d", &size)
			if body := req.Value[8:]; !bytes.Equal(body, pattern(len(body))) {
				reply(nil, status.Error(codes.DataLoss, "request body corrupted"))
				return
			}
			resp, _ := proto.Marshal(&wrapperspb.BytesValue{Value: pattern(size)})
			reply(resp, nil)
		}()
	}}
}

func TestLargeMessagesCrossFlowControlWindows(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name              string
		opts              grpclite.Options
		streams           int
		reqSize, respSize int
	}{
		{name: "3 MiB request", streams: 1, reqSize: 3 * mib, respSize: 10},
		{name: "3 MiB reply", streams: 1, reqSize: 10, respSize: 3 * mib},
		{
			// Several streams wait for the 1 MiB connection window at once, in
			// both directions.
			name:    "3 MiB each way on 3 streams, 1 MiB connection window",
			opts:    grpclite.Options{ConnWindow: mib},
			streams: 3, reqSize: 3 * mib, respSize: 3 * mib,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grpclite.CheckLeaks(t)
			tt.opts.Handler = sizedHandler
			s := startServer(t, tt.opts)
			cc := dial(t, s.addr)
			var wg sync.WaitGroup
			for i := range tt.streams {
				wg.Go(func() {
					cs, err := cc.NewStream(t.Context(), bidi, method)
					if err != nil {
						t.Errorf("stream %d: NewStream: %v", i, err)
						return
					}
					req := append(fmt.Appendf(nil, "%08d", tt.respSize), pattern(tt.reqSize)...)
					for round := range 2 {
						if err := send(cs, req); err != nil {
							t.Errorf("stream %d round %d: SendMsg: %v", i, round, err)
							return
						}
						got, err := recv(cs)
						if err != nil {
							t.Errorf("stream %d round %d: RecvMsg: %v", i, round, err)
							return
						}
						if !bytes.Equal(got, pattern(tt.respSize)) {
							t.Errorf("stream %d round %d: got a reply of %d bytes unlike the %d sent", i, round, len(got), tt.respSize)
						}
					}
					if err := cs.CloseSend(); err != nil {
						t.Errorf("stream %d: CloseSend: %v", i, err)
					}
					if _, err := recv(cs); err != io.EOF {
						t.Errorf("stream %d: after the last reply: got %v, want io.EOF", i, err)
					}
				})
			}
			wg.Wait()
		})
	}
}

func TestHandlerErrorEndsStreamWithItsStatus(t *testing.T) {
	long := strings.Repeat("x", 3000)
	tests := []struct {
		name        string
		err         error
		okReplies   int // successful replies before the error
		wantCode    codes.Code
		wantMessage string
	}{
		{
			name:     "status error on the first message",
			err:      status.Error(codes.PermissionDenied, "denied: 100% sûr, ½ off, 🚀\n\ttab %41"),
			wantCode: codes.PermissionDenied, wantMessage: "denied: 100% sûr, ½ off, 🚀\n\ttab %41",
		},
		{
			name:      "status error after replies",
			err:       status.Error(codes.FailedPrecondition, "état: 50%"),
			okReplies: 2, wantCode: codes.FailedPrecondition, wantMessage: "état: 50%",
		},
		{
			name:     "plain error is UNKNOWN",
			err:      errors.New("boom"),
			wantCode: codes.Unknown, wantMessage: "boom",
		},
		{
			name:     "long message is cut to 1024 bytes",
			err:      status.Error(codes.Internal, long),
			wantCode: codes.Internal, wantMessage: long[:1024],
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grpclite.CheckLeaks(t)
			s := startServer(t, grpclite.Options{Handler: func(context.Context) grpclite.StreamHandler {
				n := 0
				return &grpclite.HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
					if n++; n > tt.okReplies {
						reply(nil, tt.err)
						return
					}
					reply(msg, nil)
				}}
			}})
			cs := newStream(t, t.Context(), dial(t, s.addr))
			for i := range tt.okReplies {
				if got := roundTrip(t, cs, []byte("ok")); string(got) != "ok" {
					t.Fatalf("reply %d: got %q, want %q", i, got, "ok")
				}
			}
			if err := send(cs, []byte("fail")); err != nil {
				t.Fatalf("SendMsg: %v", err)
			}
			_, err := recv(cs)
			st := status.Convert(err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMessage {
				t.Errorf("got status (%v, %q), want (%v, %q)", st.Code(), st.Message(), tt.wantCode, tt.wantMessage)
			}
		})
	}
}

func TestMessageOverMaxMessageBytesIsResourceExhausted(t *testing.T) {
	const limit = 1000
	// A BytesValue of n bytes is serialized as 3 bytes of tag and length, then n.
	fits := bytes.Repeat([]byte("a"), limit-3)
	if n := proto.Size(&wrapperspb.BytesValue{Value: fits}); n != limit {
		t.Fatalf("test setup: message of %d bytes, want %d", n, limit)
	}
	tests := []struct {
		name     string
		value    []byte
		wantCode codes.Code
	}{
		{"at the limit", fits, codes.OK},
		{"one byte over", append(fits, 'b'), codes.ResourceExhausted},
		{"far over", make([]byte, 64<<10), codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grpclite.CheckLeaks(t)
			called := make(chan struct{}, 1)
			s := startServer(t, grpclite.Options{MaxMessageBytes: limit, Handler: func(context.Context) grpclite.StreamHandler {
				return &grpclite.HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
					called <- struct{}{}
					reply(msg, nil)
				}}
			}})
			cs := newStream(t, t.Context(), dial(t, s.addr))
			if err := send(cs, tt.value); err != nil {
				t.Fatalf("SendMsg: %v", err)
			}
			got, err := recv(cs)
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("got status %v (%v), want %v", code, err, tt.wantCode)
			}
			if tt.wantCode == codes.OK {
				if !bytes.Equal(got, tt.value) {
					t.Errorf("got a reply of %d bytes, want the %d sent", len(got), len(tt.value))
				}
				finish(t, cs)
				return
			}
			select {
			case <-called:
				t.Errorf("handler got a message over the limit")
			default:
			}
		})
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func TestOtherMethodOnServedConnectionIsUnimplemented(t *testing.T) {
	grpclite.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	s := grpclite.New(grpclite.Options{Method: method, Handler: grpclite.Echo, Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- s.Serve(cl) }()
	t.Cleanup(func() {
		s.Close()
		<-served
	})
	// No grpc-go server serves s.Fallback(): a call handed to it would hang,
	// and ctx would end it with DEADLINE_EXCEEDED.
	cc := dial(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()

	cs := newStream(t, ctx, cc)
	if got := roundTrip(t, cs, []byte("first")); string(got) != "first" {
		t.Fatalf("got %q, want %q", got, "first")
	}
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if code := status.Code(err); code != codes.Unimplemented {
		t.Fatalf("health Check on a grpclite connection: got %v (%v), want Unimplemented", code, err)
	}
	// The stream open before and a new one both still work.
	if got := roundTrip(t, cs, []byte("second")); string(got) != "second" {
		t.Errorf("got %q, want %q", got, "second")
	}
	finish(t, cs)
	cs2 := newStream(t, ctx, cc)
	if got := roundTrip(t, cs2, []byte("third")); string(got) != "third" {
		t.Errorf("got %q, want %q", got, "third")
	}
	finish(t, cs2)
	if n := cl.n.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}
}

func TestConnectionWhoseFirstCallIsAnotherMethodGoesToFallback(t *testing.T) {
	grpclite.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	lite := grpclite.New(grpclite.Options{Method: method, Logger: slog.New(slog.DiscardHandler),
		Handler: func(context.Context) grpclite.StreamHandler {
			return &grpclite.HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
				resp, _ := proto.Marshal(&wrapperspb.BytesValue{Value: []byte("grpclite")})
				reply(resp, nil)
			}}
		}})
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "grpclite.test.Echo",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			ClientStreams: true,
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				for {
					var m wrapperspb.BytesValue
					if err := ss.RecvMsg(&m); err == io.EOF {
						return nil
					} else if err != nil {
						return err
					}
					if err := ss.SendMsg(&wrapperspb.BytesValue{Value: []byte("grpc-go")}); err != nil {
						return err
					}
				}
			},
		}},
	}, struct{}{})
	liteDone, gsDone := make(chan error, 1), make(chan error, 1)
	go func() { liteDone <- lite.Serve(cl) }()
	go func() { gsDone <- gs.Serve(lite.Fallback()) }()
	t.Cleanup(func() {
		lite.Close()
		gs.Stop()
		<-liteDone
		<-gsDone
	})

	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	cc := dial(t, ln.Addr().String())
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check: got (%v, %v), want SERVING", resp.GetStatus(), err)
	}
	// The connection is grpc-go's now, for every method.
	cs := newStream(t, ctx, cc)
	if got := roundTrip(t, cs, []byte("hello")); string(got) != "grpc-go" {
		t.Errorf("served method on a fallback connection answered by %q, want %q", got, "grpc-go")
	}
	finish(t, cs)
	if n := cl.n.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}

	// A connection whose first call is the method stays with grpclite.
	cs2 := newStream(t, ctx, dial(t, ln.Addr().String()))
	if got := roundTrip(t, cs2, []byte("hello")); string(got) != "grpclite" {
		t.Errorf("served method on a new connection answered by %q, want %q", got, "grpclite")
	}
	finish(t, cs2)
}

func TestClientCancelEndsStreamContextAndCallsDone(t *testing.T) {
	grpclite.CheckLeaks(t)
	held, ctxEnded, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	s := startServer(t, grpclite.Options{Handler: func(ctx context.Context) grpclite.StreamHandler {
		if calls.Add(1) > 1 {
			return grpclite.Echo(ctx)
		}
		return &grpclite.HandlerFuncs{
			OnMessage: func(msg []byte, reply func([]byte, error)) {
				if string(msg) == string(mustMarshal([]byte("hold"))) {
					close(held)
					go func() {
						<-ctx.Done()
						close(ctxEnded)
						reply(nil, ctx.Err())
					}()
					return
				}
				reply(msg, nil)
			},
			OnDone: func() { close(done) },
		}
	}})
	cc := dial(t, s.addr)
	ctx, cancel := context.WithCancel(t.Context())
	cs := newStream(t, ctx, cc)
	if got := roundTrip(t, cs, []byte("before")); string(got) != "before" {
		t.Fatalf("got %q, want %q", got, "before")
	}
	if err := send(cs, []byte("hold")); err != nil {
		t.Fatalf("SendMsg: %v", err)
	}
	wait(t, held, "the handler to get the message")
	select {
	case <-done:
		t.Fatal("Done called while the handler holds a message")
	default:
	}
	cancel()
	wait(t, ctxEnded, "the stream's context to end")
	wait(t, done, "Done")
	if _, err := recv(cs); status.Code(err) != codes.Canceled {
		t.Errorf("RecvMsg after cancel: got %v, want Canceled", err)
	}
	// The connection serves on.
	cs2 := newStream(t, t.Context(), cc)
	if got := roundTrip(t, cs2, []byte("after")); string(got) != "after" {
		t.Errorf("got %q, want %q", got, "after")
	}
	finish(t, cs2)
}

func mustMarshal(b []byte) []byte {
	m, err := proto.Marshal(&wrapperspb.BytesValue{Value: b})
	if err != nil {
		panic(err)
	}
	return m
}

func TestShutdownLetsStreamsInFlightFinish(t *testing.T) {
	grpclite.CheckLeaks(t)
	s := startServer(t, grpclite.Options{Handler: grpclite.Echo})
	cs := newStream(t, t.Context(), dial(t, s.addr))
	if got := roundTrip(t, cs, []byte("one")); string(got) != "one" {
		t.Fatalf("got %q, want %q", got, "one")
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(t.Context()) }()
	wait(t, s.serveDone, "Serve to return")
	if !errors.Is(s.serveErr, grpclite.ErrServerClosed) {
		t.Errorf("Serve returned %v once Shutdown began, want ErrServerClosed", s.serveErr)
	}

	if got := roundTrip(t, cs, []byte("two")); string(got) != "two" {
		t.Errorf("during Shutdown: got %q, want %q", got, "two")
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a stream was open", err)
	default:
	}
	finish(t, cs)
	if err := wait(t, shutdown, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown returned %v, want nil", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, grpclite.ErrServerClosed) {
		t.Errorf("Serve after Shutdown returned %v, want ErrServerClosed", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on the listener Serve refused: got %v, want net.ErrClosed", err)
	}
}

// cuttingStops are the two ways to stop a server that cut streams still open:
// Shutdown once its context ends, and Close.
var cuttingStops = []struct {
	name    string
	stop    func(*grpclite.Server) error
	wantErr error
}{
	{
		name: "Shutdown past its deadline",
		stop: func(s *grpclite.Server) error {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			return s.Shutdown(ctx)
		},
		wantErr: context.DeadlineExceeded,
	},
	{
		name: "Close",
		stop: func(s *grpclite.Server) error { s.Close(); return nil },
	},
}

func TestStopCutsStreamsButWaitsForHandlers(t *testing.T) {
	for _, tt := range cuttingStops {
		t.Run(tt.name, func(t *testing.T) {
			grpclite.CheckLeaks(t)
			held, ctxEnded, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
			var replied atomic.Bool
			s := startServer(t, grpclite.Options{Handler: func(ctx context.Context) grpclite.StreamHandler {
				return &grpclite.HandlerFuncs{
					OnMessage: func(msg []byte, reply func([]byte, error)) {
						close(held)
						go func() {
							<-ctx.Done()
							close(ctxEnded)
							<-release
							replied.Store(true)
							reply(nil, ctx.Err())
						}()
					},
					OnDone: func() { close(done) },
				}
			}})
			cs := newStream(t, t.Context(), dial(t, s.addr))
			if err := send(cs, []byte("stuck")); err != nil {
				t.Fatalf("SendMsg: %v", err)
			}
			wait(t, held, "the handler to get the message")

			stopped := make(chan error, 1)
			go func() { stopped <- tt.stop(s.Server) }()
			wait(t, ctxEnded, "the stream's context to end")
			select {
			case err := <-stopped:
				t.Fatalf("returned %v before the handler replied", err)
			default:
			}
			close(release)
			err := wait(t, stopped, "the server to stop")
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
			if !replied.Load() {
				t.Errorf("returned before the handler replied")
			}
			wait(t, done, "Done")
			if _, err := recv(cs); err == nil {
				t.Errorf("RecvMsg on a cut stream: got nil error, want one")
			}
		})
	}
}

// pipeListener accepts the server ends of net.Pipe connections made by dial.
type pipeListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "pipe"} }

func (l *pipeListener) dial(t *testing.T) net.Conn {
	srv, cli := net.Pipe()
	select {
	case l.conns <- srv:
	case <-time.After(waitLimit):
		t.Fatal("timed out waiting for Accept")
	}
	return cli
}

// A client that stops reading leaves the server's writes blocked (on a pipe,
// at once); Shutdown and Close must still return.
func TestStopReturnsWhenClientStopsReading(t *testing.T) {
	for _, tt := range cuttingStops {
		t.Run(tt.name, func(t *testing.T) {
			grpclite.CheckLeaks(t)
			pl := newPipeListener()
			s := grpclite.New(grpclite.Options{Method: method, Handler: grpclite.Echo, Logger: slog.New(slog.DiscardHandler)})
			served := make(chan error, 1)
			go func() { served <- s.Serve(pl) }()
			cli := pl.dial(t)
			t.Cleanup(func() {
				cli.Close()
				s.Close()
				<-served
			})
			cli.SetDeadline(time.Now().Add(waitLimit))
			if _, err := io.ReadFull(cli, make([]byte, 9)); err != nil {
				t.Fatalf("reading the server's first SETTINGS: %v", err)
			}
			// A stream: the server's settings are then written to a client that
			// reads no more, and on a pipe that write blocks at once.
			fr := http2.NewFramer(cli, nil)
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method},
				{":authority", "x"}, {"content-type", "application/grpc"}} {
				enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			if _, err := io.WriteString(cli, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
				t.Fatal(err)
			}

			// One byte of the server's answer: it is now inside a write that
			// cannot end, the rest of the answer being unread.
			if _, err := io.ReadFull(cli, make([]byte, 1)); err != nil {
				t.Fatalf("reading the server's answer: %v", err)
			}

			stopped := make(chan error, 1)
			go func() { stopped <- tt.stop(s) }()
			select {
			case err := <-stopped:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("got %v, want %v", err, tt.wantErr)
				}
			case <-time.After(waitLimit):
				cli.Close() // unblocks the server, so that the test can end
				t.Fatalf("did not return within %v while a client did not read", waitLimit)
			}
		})
	}
}

// temporaryErrorListener fails its first Accept with EMFILE, as a process out
// of file descriptors does, then waits to be closed.
type temporaryErrorListener struct {
	calls               atomic.Int32
	retried, closed     chan struct{}
	retryOnce, closeOne sync.Once
}

func (l *temporaryErrorListener) Accept() (net.Conn, error) {
	if l.calls.Add(1) == 1 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	l.retryOnce.Do(func() { close(l.retried) })
	<-l.closed
	return nil, net.ErrClosed
}

func (l *temporaryErrorListener) Close() error {
	l.closeOne.Do(func() { close(l.closed) })
	return nil
}

func (l *temporaryErrorListener) Addr() net.Addr { return &net.TCPAddr{} }

func TestServeRetriesAfterTemporaryAcceptError(t *testing.T) {
	grpclite.CheckLeaks(t)
	l := &temporaryErrorListener{retried: make(chan struct{}), closed: make(chan struct{})}
	s := grpclite.New(grpclite.Options{Method: method, Handler: grpclite.Echo, Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	select {
	case <-l.retried:
	case err := <-served:
		t.Fatalf("Serve returned %v after a temporary Accept error, want it to accept again", err)
	case <-time.After(waitLimit):
		t.Fatal("timed out waiting for Serve to accept again")
	}
	s.Close()
	if err := wait(t, served, "Serve to return"); !errors.Is(err, grpclite.ErrServerClosed) {
		t.Errorf("Serve returned %v after Close, want ErrServerClosed", err)
	}
}

// A client may queue many messages behind one the handler holds. When the
// handler then answers each at once, the queue is worked through in a loop:
// the stack under Message stays as deep as for the first message.
func TestQueuedMessagesAreHandedOverInALoopNotARecursion(t *testing.T) {
	grpclite.CheckLeaks(t)
	const queued = 2000
	release := make(chan struct{})
	first := make(chan struct{})
	var maxDepth, firstDepth atomic.Int32
	srv := startServer(t, grpclite.Options{Handler: func(context.Context) grpclite.StreamHandler {
		n := 0
		return &grpclite.HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
			n++
			depth := int32(runtime.Callers(0, make([]uintptr, 4096)))
			if depth > maxDepth.Load() {
				maxDepth.Store(depth)
			}
			if n == 1 {
				// Held until every other message is queued behind it, then
				// answered from a goroutine of its own.
				close(first)
				go func() {
					<-release
					firstDepth.Store(int32(runtime.Callers(0, make([]uintptr, 4096))))
					reply(msg, nil)
				}()
				return
			}
			reply(msg, nil)
		}}
	}})
	cs := newStream(t, t.Context(), dial(t, srv.addr))
	for i := range queued + 1 {
		if err := send(cs, []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("SendMsg %d: %v", i, err)
		}
		if i == 0 {
			wait(t, first, "the first message")
		}
	}
	close(release)
	for i := range queued + 1 {
		got, err := recv(cs)
		if err != nil || string(got) != strconv.Itoa(i) {
			t.Fatalf("reply %d: got (%q, %v), want %q", i, got, err, strconv.Itoa(i))
		}
	}
	finish(t, cs)
	// The queued messages are handed over under the first reply; a recursion
	// would add a few frames per message.
	if d := maxDepth.Load(); d > firstDepth.Load()+32 {
		t.Errorf("stack under Message: got %d frames, want at most %d (the first reply's depth + 32)", d, firstDepth.Load()+32)
	}
}
