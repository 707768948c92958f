package processor

import (
	"cmp"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"time"
)

// The heap backstop. The buffer pool sees every DATA frame of more than
// 1 KiB; grpc-go reads smaller ones into plain allocations of its own
// (internal/transport/http_util.go, readDataFrame), each also boxed into a
// mem.Buffer and queued, and keeps them until the message is whole. A client
// sending a message in 1-byte frames makes the server hold tens of bytes per
// byte sent, and the pool's count never moves. So one goroutine, started with
// the first stream and ended when none is left, also watches the Go heap:
// when the live heap passes the budget plus heapHeadroom, it sheds the
// streams that have waited longest for a whole message, as the pool's
// shedder does, until the heap is back under. The pool stays the precise,
// immediate trigger for the frames it sees; this one bounds what it cannot.
//
// The live heap is what the last collection found, and the runtime collects
// when the heap has doubled since: shedding alone would let the heap reach
// twice the limit before the shed streams' memory is reused. Limits.MemoryLimit
// is the Go memory limit that makes the runtime collect before that.

const (
	// heapHeadroom is what the process may hold besides unfinished messages
	// before its live heap counts as past the budget: an idle extproc's heap
	// is a few MiB, its connections' buffers a few more, then the in-memory
	// store's buckets. It leaves that several times over for most
	// deployments, so that shedding is for what clients send, not for what
	// the process needs.
	heapHeadroom = 64 << 20
	// heapPeriod is how often the heap is read: a read costs about 0.3 µs
	// (BenchmarkInflightHeapRead), and a collection comes every few hundred
	// ms under an attack of small frames, so the watcher reacts within one.
	heapPeriod = 50 * time.Millisecond
)

// heapStats is what the backstop reads of the heap.
type heapStats struct {
	// live is what the last collection found live: exact, but as old as
	// that collection.
	live int64
	// cycles counts the collections completed.
	cycles int64
}

var heapMetrics = []string{"/gc/heap/live:bytes", "/gc/cycles/total:gc-cycles"}

// newRuntimeHeapReader reads heapStats from runtime/metrics. Only the
// watcher calls it.
func newRuntimeHeapReader() func() heapStats {
	samples := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		samples[i].Name = name
	}
	return func() heapStats {
		metrics.Read(samples)
		return heapStats{live: int64(samples[0].Value.Uint64()), cycles: int64(samples[1].Value.Uint64())}
	}
}

// heapWatch is the watcher's state.
type heapWatch struct {
	// limit is the live heap past which the watcher sheds: the budget plus
	// heapHeadroom.
	limit  int64
	period time.Duration
	read   func() heapStats // the runtime's; tests replace it
	// running is set while watchHeap runs; under inflight.mu.
	running bool
	// after is the first collection whose live figure counts after the
	// last shedding; only the watcher uses it.
	after int64
	// checks counts the checks made; read by tests.
	checks atomic.Int64
}

// watchHeap checks the heap every period while any stream is listed. The
// tap starts it; it ends once the last stream has, so that a stopped server
// leaves no goroutine behind.
func (f *inflight) watchHeap() {
	t := time.NewTicker(f.heap.period)
	defer t.Stop()
	for range t.C {
		f.mu.Lock()
		f.pruneLocked()
		if f.head == len(f.streams) {
			f.heap.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		f.checkHeap()
	}
}

// checkHeap sheds streams when the live heap is past the limit. After a round
// of shedding it waits for a collection that began after the canceled streams
// ended: only that one tells what they freed, and shedding on an older figure
// would cut streams for bytes already let go.
func (f *inflight) checkHeap() {
	f.heap.checks.Add(1)
	h := f.heap.read()
	if h.live <= f.heap.limit || h.cycles < f.heap.after {
		return
	}
	victims := f.takeVictims(h.live)
	if len(victims) == 0 {
		// What is held belongs to no stream, or to streams already
		// canceled: shedding more would not free it.
		return
	}
	f.shed.Add(int64(len(victims)))
	for _, s := range victims {
		s.cancel()
	}
	t := time.NewTimer(f.shedWait)
	for _, s := range victims {
		select {
		case <-s.ended:
		case <-t.C:
		}
	}
	t.Stop()
	// A collection under way now may have marked what they held: the one
	// after it is the first to begin after.
	f.heap.after = f.heap.read().cycles + 2
}

// takeVictims takes the streams that have waited longest for a whole
// message: the share of the streams alive that the excess over the limit is
// of the live heap, at least one. Which stream holds what is not known
// (grpc-go does not say), so the share is an estimate, and the next round
// corrects it; the streams waiting longest are also the ones that have had
// longest to pile frames up.
func (f *inflight) takeVictims(live int64) []*inflightStream {
	type candidate struct {
		progress int64 // read once: the watch interceptor moves it
		s        *inflightStream
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var alive []candidate
	for _, s := range f.streams[f.head:] {
		if !s.shed && !s.finished() {
			alive = append(alive, candidate{s.progress.Load(), s})
		}
	}
	if len(alive) == 0 {
		return nil
	}
	n := int((int64(len(alive))*(live-f.heap.limit) + live - 1) / live)
	n = min(max(n, 1), len(alive))
	slices.SortFunc(alive, func(a, b candidate) int { return cmp.Compare(a.progress, b.progress) })
	victims := make([]*inflightStream, n)
	for i, c := range alive[:n] {
		c.s.shed = true
		victims[i] = c.s
	}
	return victims
}
