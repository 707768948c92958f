package processor

import (
	"context"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

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
	ctx      context.Context    // the context the tap returned
	finish   context.CancelFunc // as grpc-go finishes a stream
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
	s := &fakeStream{ctx: ctx, finish: finish, finished: make(chan struct{})}
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
	n := len(f.streams) - f.head
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

// fakeHeap stands for the Go heap in the backstop's tests: streams allocate
// into it, and a collection, when the test runs one, finds live what the
// streams not yet finished hold.
type fakeHeap struct {
	mu     sync.Mutex
	held   map[*fakeStream]int64
	live   int64 // as of the last collection
	cycles int64
}

func installFakeHeap(f *inflight, limit int64) *fakeHeap {
	h := &fakeHeap{held: map[*fakeStream]int64{}}
	f.heap.limit, f.heap.period = limit, time.Millisecond
	f.heap.read = func() heapStats {
		h.mu.Lock()
		defer h.mu.Unlock()
		return heapStats{live: h.live, cycles: h.cycles}
	}
	return h
}

// allocate makes s hold n more bytes of the heap.
func (h *fakeHeap) allocate(s *fakeStream, n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[s] += n
}

// collect runs a collection.
func (h *fakeHeap) collect() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.live = 0
	for s, n := range h.held {
		select {
		case <-s.finished:
		default:
			h.live += n
		}
	}
	h.cycles++
}

// waitChecks returns once the heap watcher has made n more checks, or has
// ended (every stream finished or shed).
func waitChecks(f *inflight, n int64) {
	until := f.heap.checks.Load() + n
	for f.heap.checks.Load() < until {
		f.mu.Lock()
		running := f.heap.running
		f.mu.Unlock()
		if !running {
			return
		}
		runtime.Gosched()
	}
}

// collectLive runs a collection and returns what it found live.
func (h *fakeHeap) collectLive() int64 {
	h.collect()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live
}

func TestInflightHeapShedsLongestWaitingStreamsUntilLiveUnderLimit(t *testing.T) {
	f := newInflight(1 << 30) // the pool's budget is never reached here
	heap := installFakeHeap(f, 100)
	busy := openStream(t, f, 40, 0) // began first, but had a message just now
	idle := openStream(t, f, 10, 0) // longest waiting, holds nothing
	first := openStream(t, f, 20, 0)
	second := openStream(t, f, 30, 0)
	heap.allocate(busy, 10)
	heap.allocate(first, 60)
	heap.allocate(second, 60)

	// The collections find 130 live, past the limit of 100. One round sheds
	// idle (the longest waiting), freeing nothing; the next, first, which
	// brings the live heap to 70.
	for i := 0; heap.collectLive() > 100; i++ {
		if i == 100000 {
			t.Fatalf("live heap still %d after %d collections; want it under the limit, 100", heap.collectLive(), i)
		}
		runtime.Gosched()
	}
	waitChecks(f, 3) // a few checks that see 70
	if n := f.shed.Load(); n != 2 {
		t.Errorf("%d streams shed, want 2", n)
	}
	if err := idle.ctx.Err(); err == nil {
		t.Errorf("the stream waiting longest was not shed")
	}
	for name, s := range map[string]*fakeStream{"second": second, "busy": busy} {
		if err := s.ctx.Err(); err != nil {
			t.Errorf("%s stream canceled (%v); only the two waiting longest should be", name, err)
		}
	}
}

// After shedding, the live figure of a collection that began before the
// shed streams ended still counts their bytes: the watcher must not shed
// again on it.
func TestInflightHeapWaitsForACollectionAfterShedding(t *testing.T) {
	f := newInflight(1 << 30)
	heap := installFakeHeap(f, 100)
	first := openStream(t, f, 10, 0)
	second := openStream(t, f, 20, 0)
	heap.allocate(first, 60)
	heap.allocate(second, 60)
	heap.collect() // 120 live: shedding first is enough

	select {
	case <-first.finished:
	case <-second.finished:
		t.Fatalf("second stream shed before the one waiting longest")
	}
	waitChecks(f, 3) // a few checks that see only the old figure
	if err := second.ctx.Err(); err != nil {
		t.Fatalf("second stream shed on a live figure from before the first was: %v", err)
	}
	// A collection finishing now began before the first stream ended, as far
	// as the watcher knows; its figure, still past the limit, must not count
	// either.
	heap.mu.Lock()
	heap.cycles++
	heap.mu.Unlock()
	waitChecks(f, 3)
	if err := second.ctx.Err(); err != nil {
		t.Fatalf("second stream shed on a collection that may have begun before the first was: %v", err)
	}
	if n := f.shed.Load(); n != 1 {
		t.Errorf("%d streams shed, want 1", n)
	}
}

func TestInflightHeapWatcherEndsWithTheLastStream(t *testing.T) {
	f := newInflight(1 << 30)
	installFakeHeap(f, 100)
	running := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.heap.running
	}
	for round := range 2 {
		s := openStream(t, f, 0, 0)
		if !running() {
			t.Fatalf("round %d: no heap watcher while a stream is open", round)
		}
		s.finish()
		for running() {
			runtime.Gosched()
		}
	}
}

// BenchmarkInflightHeapRead is one read of the heap by the backstop.
func BenchmarkInflightHeapRead(b *testing.B) {
	read := newRuntimeHeapReader()
	b.ReportAllocs()
	for b.Loop() {
		read()
	}
}
