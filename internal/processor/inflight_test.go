package processor

import (
	"context"
	"io"
	"runtime"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"
)

const frameBytes = 16 << 10 // one full DATA frame, as grpc-go asks the pool for it

func TestInflightCountsBuffersUntilReturned(t *testing.T) {
	f := newInflight(1 << 30)
	a, b := f.Get(frameBytes), f.Get(frameBytes)
	if len(*a) != frameBytes {
		t.Fatalf("Get(%d) returned %d bytes", frameBytes, len(*a))
	}
	if got := f.held.Load(); got != 2*frameBytes {
		t.Fatalf("held after two Gets: %d, want %d", got, 2*frameBytes)
	}
	// grpc-go may shorten the slice it was given (a padded frame) before
	// returning it.
	*a = (*a)[:100]
	f.Put(a)
	f.Put(b)
	if got := f.held.Load(); got != 0 {
		t.Fatalf("held after both Puts: %d, want 0", got)
	}
}

// A stream closed with frames still queued leaves them to the collector
// (grpc-go's recvBuffer backlog); the count must not keep them forever.
func TestInflightForgetsBuffersCollectedWithoutPut(t *testing.T) {
	f := newInflight(1 << 30)
	for range 8 {
		f.Get(frameBytes)
	}
	if got := f.held.Load(); got != 8*frameBytes {
		t.Fatalf("held: %d, want %d", got, 8*frameBytes)
	}
	// Cleanups run on their own goroutine after the collection that finds the
	// buffers unreachable.
	for i := 0; f.held.Load() != 0; i++ {
		if i == 1000 {
			t.Fatalf("held %d bytes after %d collections, want 0", f.held.Load(), i)
		}
		runtime.GC()
		runtime.Gosched()
	}
}

// fakeStream is what grpc-go does with a stream the tap admitted: its
// handler reads into buffers from the pool and, when the stream's context
// is canceled, frees them and finishes the stream.
type fakeStream struct {
	ctx      context.Context // the context the tap returned
	finished chan struct{}
}

// openStream opens a stream whose last whole message arrived at progress
// (any clock: only the order counts) and which holds buffers frames.
func openStream(t *testing.T, f *inflight, progress int64, buffers int) *fakeStream {
	t.Helper()
	parent, finish := context.WithCancel(context.Background())
	ctx, err := f.tap(parent, &tap.Info{FullMethodName: "/envoy.service.ext_proc.v3.ExternalProcessor/Process"})
	if err != nil {
		t.Fatalf("tap refused a stream: %v", err)
	}
	ctx.Value(inflightKey{}).(*inflightStream).progress.Store(progress)
	var handles []*[]byte
	for range buffers {
		handles = append(handles, f.Get(frameBytes))
	}
	s := &fakeStream{ctx: ctx, finished: make(chan struct{})}
	go func() {
		<-ctx.Done()
		for _, p := range handles {
			f.Put(p)
		}
		finish()
		close(s.finished)
	}()
	t.Cleanup(finish)
	return s
}

func TestInflightCancelsLongestWaitingStreamsUntilUnderBudget(t *testing.T) {
	f := newInflight(5 * frameBytes)
	// Listed in the order they began; progress says since when each has
	// waited for a whole message.
	busy := openStream(t, f, 40, 0)    // began first, but had a message just now
	idle := openStream(t, f, 10, 0)    // longest waiting, holds nothing
	oldest := openStream(t, f, 20, 3)  // holds 3 frames
	holding := openStream(t, f, 30, 3) // passes the budget: 6 frames held

	// The shedder cancels idle (freeing nothing), then oldest, which brings
	// the count to 3 frames, under the budget.
	<-oldest.finished
	<-idle.finished
	for f.shed.Load() != 2 {
		runtime.Gosched()
	}
	if got := f.held.Load(); got != 3*frameBytes {
		t.Errorf("held after shedding: %d, want %d", got, 3*frameBytes)
	}
	for name, s := range map[string]*fakeStream{"holding": holding, "busy": busy} {
		if err := s.ctx.Err(); err != nil {
			t.Errorf("%s stream canceled (%v); only the two waiting longest should be", name, err)
		}
	}
}

func TestInflightForgetsFinishedStreams(t *testing.T) {
	f := newInflight(1 << 30)
	// One stream that stays, then many that finish behind it: the list must
	// not keep them all.
	stay, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := f.tap(stay, &tap.Info{}); err != nil {
		t.Fatal(err)
	}
	for range 10000 {
		parent, finish := context.WithCancel(context.Background())
		if _, err := f.tap(parent, &tap.Info{}); err != nil {
			t.Fatal(err)
		}
		finish()
	}
	f.mu.Lock()
	n := len(f.streams)
	f.mu.Unlock()
	if n > 100 {
		t.Errorf("%d streams listed after 10,000 finished behind one alive; want them dropped", n)
	}
	if s := f.nextVictim(); s == nil || s.finished() {
		t.Fatalf("next victim: got %v, want the stream alive", s)
	}
	if s := f.nextVictim(); s != nil {
		t.Errorf("next victim after the only stream alive was taken: got one, want none")
	}
}

// recvStream is a grpc.ServerStream whose RecvMsg returns err.
type recvStream struct {
	grpc.ServerStream
	ctx context.Context
	err error
}

func (r *recvStream) Context() context.Context { return r.ctx }
func (r *recvStream) RecvMsg(any) error        { return r.err }

func TestInflightWatchRecordsWholeMessages(t *testing.T) {
	f := newInflight(1 << 30)
	ctx, err := f.tap(t.Context(), &tap.Info{})
	if err != nil {
		t.Fatal(err)
	}
	s := ctx.Value(inflightKey{}).(*inflightStream)
	for _, recvErr := range []error{nil, io.EOF} {
		s.progress.Store(1)
		ss := &recvStream{ctx: ctx, err: recvErr}
		if err := f.watch(nil, ss, nil, func(_ any, ss grpc.ServerStream) error { return ss.RecvMsg(nil) }); err != recvErr {
			t.Fatalf("handler error: got %v, want %v", err, recvErr)
		}
		moved := s.progress.Load() != 1
		if moved != (recvErr == nil) {
			t.Errorf("RecvMsg returning %v: progress moved %v, want %v", recvErr, moved, recvErr == nil)
		}
	}
}

// BenchmarkInflightStream is what the budget adds to one stream: the tap's
// registration and its removal when grpc-go finishes the stream.
func BenchmarkInflightStream(b *testing.B) {
	f := newInflight(1 << 30)
	b.ReportAllocs()
	for b.Loop() {
		parent, finish := context.WithCancel(context.Background())
		if _, err := f.tap(parent, &tap.Info{}); err != nil {
			b.Fatal(err)
		}
		finish()
	}
}

// BenchmarkStreamContext is what the benchmark above spends outside the
// budget: grpc-go's own stream context.
func BenchmarkStreamContext(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, finish := context.WithCancel(context.Background())
		finish()
	}
}

// BenchmarkInflightFrame is what the budget adds to one DATA frame of more
// than 1 KiB: a counted Get and Put.
func BenchmarkInflightFrame(b *testing.B) {
	f := newInflight(1 << 30)
	b.ReportAllocs()
	for b.Loop() {
		f.Put(f.Get(frameBytes))
	}
}
