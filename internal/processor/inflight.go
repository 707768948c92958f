package processor

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/tap"
)

// inflight bounds the bytes grpc-go holds for received messages, across all
// the streams of all the connections of one server.
//
// Why it is needed: grpc-go (v1.85) reads every DATA frame into a buffer of
// its own and keeps it until the whole message has arrived, and once the
// handler asks for a message it opens the stream's window to the length the
// message's 5-byte prefix announces (transport.Stream.read → requestRead →
// inFlow.maybeAdjust); the connection's window is replenished as frames are
// read, not as they are consumed (http2Server.handleData). So flow control
// bounds nothing: each stream may hold up to the message limit, and a client
// may open as many streams, on as many connections, as it likes.
//
// How: the server's mem.BufferPool (experimental.BufferPool) is wrapped to
// count the bytes handed out and not yet returned or collected; every stream
// is registered by the tap handle (grpc.InTapHandle) under a context this
// type can cancel. When the count passes the budget, a goroutine cancels the
// streams that have waited longest for a whole message, one at a time, waiting for each to end (its handler's
// read fails, grpc-go frees the partial message and ends the stream with
// grpc-status CANCELLED and RST_STREAM), until the count is back under the
// budget. Longest waiting first because Envoy sends each message in
// milliseconds: a stream that has waited long for one is one that does not
// finish it. Age alone would not do: while an attacker keeps starting
// streams, any stream older than its newest few (an Envoy stream slowed by
// load) would be cut. New streams are not refused, so Envoy's own keep
// being served while an attacker's are cut.
//
// The pool does not see DATA frames of 1 KiB or less; a watcher of the Go
// heap sheds the same way when the live heap passes the budget plus a
// headroom (inflight_heap.go).
//
// Nothing blocks grpc-go's goroutines: a connection's reader that waited for
// memory would stop answering pings and freeing its own streams.
type inflight struct {
	budget int64
	inner  mem.BufferPool
	held   atomic.Int64 // bytes handed out by Get, not yet Put or collected
	// releaseFn is f.release made once: a method value made in Get would be
	// an allocation per buffer.
	releaseFn func(int64)

	// shedding is set while a shed goroutine runs; Get starts one when held
	// passes the budget and none runs.
	shedding atomic.Bool

	mu sync.Mutex
	// streams[head:] are the streams admitted, oldest first. Finished ones
	// leave lazily (pruneLocked), which costs a stream nothing when it ends.
	streams []*inflightStream
	head    int
	// live is how many streams were left by the last full sweep.
	live int

	// heap is the heap watcher's (watchHeap).
	heap heapWatch

	// shedWait bounds how long the shedder waits for a canceled stream to end
	// before it moves on: a handler busy in a store call returns only after
	// it, and the bytes the next stream holds should not wait for that.
	shedWait time.Duration
	// shed counts the streams canceled for the budget; read by tests.
	shed atomic.Int64
}

// inflightStream is one stream the tap handle admitted, and the context its
// handler runs under: one allocation holds the stream's record, answers the
// context lookup that finds it (Value) and wraps its ServerStream (ws).
type inflightStream struct {
	context.Context // derived from grpc-go's stream context; cancel ends it
	cancel          context.CancelFunc
	ended           <-chan struct{} // closed by grpc-go when the stream is finished
	// progress is when the stream began or last received a whole message
	// (Unix nanoseconds): the stream furthest from it is the one shed first.
	progress atomic.Int64
	shed     bool // taken by a shedder; under inflight.mu
	ws       watchedStream
}

// Value answers inflightKey with the stream itself.
func (s *inflightStream) Value(key any) any {
	if key == (inflightKey{}) {
		return s
	}
	return s.Context.Value(key)
}

func (s *inflightStream) finished() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

func newInflight(budget int64) *inflight {
	f := &inflight{budget: budget, inner: mem.DefaultBufferPool(), shedWait: time.Second,
		heap: heapWatch{limit: budget + heapHeadroom, period: heapPeriod, read: newRuntimeHeapReader()}}
	f.releaseFn = f.release
	return f
}

// options are the grpc-go server options that install the budget.
func (f *inflight) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		experimental.BufferPool(f),
		grpc.InTapHandle(f.tap),
		grpc.ChainStreamInterceptor(f.watch),
	}
}

// tracked is what Get hands out: the pointer returned is &b, which is also
// the struct's address, so Put finds the rest from it. The cleanup takes the
// bytes off the count when grpc-go drops a buffer without returning it (a
// stream closed with frames still queued: transport.recvBuffer's backlog is
// left to the collector).
type tracked struct {
	b       []byte // first: &t.b == t
	inner   *[]byte
	size    int64
	cleanup runtime.Cleanup
}

// Get implements mem.BufferPool.
func (f *inflight) Get(length int) *[]byte {
	p := f.inner.Get(length)
	t := trackedPool.Get().(*tracked)
	t.b, t.inner, t.size = *p, p, int64(cap(*p))
	t.cleanup = runtime.AddCleanup(t, f.releaseFn, t.size)
	if f.held.Add(t.size) > f.budget && f.shedding.CompareAndSwap(false, true) {
		go f.shedLoop()
	}
	return &t.b
}

// Put implements mem.BufferPool. grpc-go only returns pointers Get gave out
// (mem.BufferPool's contract), so p is the address of a tracked.
func (f *inflight) Put(p *[]byte) {
	t := (*tracked)(unsafe.Pointer(p))
	t.cleanup.Stop()
	f.release(t.size)
	// t.inner still holds the whole slice the inner pool gave out.
	f.inner.Put(t.inner)
	*t = tracked{}
	trackedPool.Put(t)
}

// trackedPool saves Get an allocation; a tracked is put back only by Put,
// its cleanup stopped.
var trackedPool = sync.Pool{New: func() any { return new(tracked) }}

func (f *inflight) release(size int64) { f.held.Add(-size) }

// tap registers every new stream under a context the shedder can cancel. It
// runs on the connection's reader goroutine, so it only takes a lock.
func (f *inflight) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	ended := ctx.Done() // grpc-go cancels the stream's context when it finishes it
	s := &inflightStream{ended: ended}
	s.Context, s.cancel = context.WithCancel(ctx)
	s.progress.Store(time.Now().UnixNano())
	f.mu.Lock()
	f.streams = append(f.streams, s)
	f.pruneLocked()
	if !f.heap.running {
		f.heap.running = true
		go f.watchHeap()
	}
	f.mu.Unlock()
	return s, nil
}

// inflightKey keys a stream's *inflightStream in its context.
type inflightKey struct{}

// watch records, for a streaming handler, when each whole message arrives.
// (A unary handler runs only once its one message is whole.)
func (f *inflight) watch(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	s, ok := ss.Context().Value(inflightKey{}).(*inflightStream)
	if !ok {
		return h(srv, ss)
	}
	// The wrapper lives in s, which is allocated already. It lets go of the
	// ServerStream when the handler returns: s stays listed until pruned, and
	// a canceled stream's unread frames should not stay with it.
	s.ws = watchedStream{ServerStream: ss, progress: &s.progress}
	err := h(srv, &s.ws)
	s.ws = watchedStream{}
	return err
}

type watchedStream struct {
	grpc.ServerStream
	progress *atomic.Int64
}

func (w *watchedStream) RecvMsg(m any) error {
	err := w.ServerStream.RecvMsg(m)
	if err == nil {
		w.progress.Store(time.Now().UnixNano())
	}
	return err
}

// pruneLocked drops the finished streams at the front of the list (Envoy's
// end about in the order they began) and, once the list has doubled since
// the last full sweep, all of them: the list stays within about twice the
// streams alive, at a constant cost per stream.
func (f *inflight) pruneLocked() {
	for f.head < len(f.streams) && (f.streams[f.head].shed || f.streams[f.head].finished()) {
		f.streams[f.head] = nil
		f.head++
	}
	// Moved down once half the slice is behind head, not resliced: reslicing
	// would shrink its capacity, and with few streams alive every append
	// would allocate.
	if 2*f.head >= len(f.streams) {
		n := copy(f.streams, f.streams[f.head:])
		clear(f.streams[n:])
		f.streams, f.head = f.streams[:n], 0
	}
	if len(f.streams)-f.head <= 2*f.live+64 {
		return
	}
	kept := f.streams[:0]
	for _, s := range f.streams[f.head:] {
		if !s.shed && !s.finished() {
			kept = append(kept, s)
		}
	}
	clear(f.streams[len(kept):])
	f.streams, f.head = kept, 0
	f.live = len(kept)
}

// shedLoop cancels the longest waiting streams while the count is over the budget,
// then ends.
func (f *inflight) shedLoop() {
	for {
		for f.held.Load() > f.budget {
			s := f.nextVictim()
			if s == nil {
				// What is held belongs to no stream, or to one already
				// canceled; it is freed without help.
				break
			}
			f.shed.Add(1)
			s.cancel()
			t := time.NewTimer(f.shedWait)
			select {
			case <-s.ended:
			case <-t.C:
			}
			t.Stop()
		}
		f.shedding.Store(false)
		// A Get that passed the budget after the last check and found this
		// goroutine still running started none.
		if f.held.Load() <= f.budget || !f.shedding.CompareAndSwap(false, true) {
			return
		}
	}
}

// nextVictim takes the stream that has waited longest for a whole message
// (since it began or since its last one), or returns nil. A linear scan:
// it runs only past the budget.
func (f *inflight) nextVictim() *inflightStream {
	f.mu.Lock()
	defer f.mu.Unlock()
	var victim *inflightStream
	for _, s := range f.streams[f.head:] {
		if s.shed || s.finished() {
			continue
		}
		if victim == nil || s.progress.Load() < victim.progress.Load() {
			victim = s
		}
	}
	if victim != nil {
		victim.shed = true
	}
	return victim
}
