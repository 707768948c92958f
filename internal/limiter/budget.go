package limiter

import (
	"context"
	"runtime"
	"time"

	"golang.org/x/sync/semaphore"
)

// Reading a large body is the one expensive step before a decision (up to
// about 20 ms of CPU for the worst 4 MiB body), and a client can send as many
// as it likes. Left alone, a flood of them shares the CPU with every other
// decision, until all of them, ordinary ones included, take longer than
// Envoy's message_timeout; with failure_mode_allow Envoy then lets them all
// through undecided. So large bodies are read a few at a time: the rest wait
// their turn off the CPU, and one that waits too long is refused (503) while
// Envoy still waits for the answer. Small bodies never wait.
const (
	// smallBody is the size below which a body is read at once: the largest
	// ordinary tools/call, read in well under 100 µs.
	smallBody = 64 << 10
	// DefaultReadWait is how long a large body may wait for its turn: well
	// inside the shipped message_timeout (500 ms), so the refusal, not
	// Envoy's timeout, is what the client gets.
	DefaultReadWait = 200 * time.Millisecond
)

// readBudget admits large bodies by size.
type readBudget struct {
	sem  *semaphore.Weighted // nil: unbounded
	size int64
	wait time.Duration
}

// newReadBudget admits budget bytes of large bodies at once: 0 means room for
// one 4 MiB body per CPU but one, so that one CPU is always there for ordinary
// decisions (BenchmarkProbeUnderFlood: with every CPU reading, a probe waits
// for the scheduler's 10 ms preemption), negative means no bound.
func newReadBudget(budget int64, wait time.Duration) readBudget {
	if budget < 0 {
		return readBudget{}
	}
	if budget == 0 {
		budget = int64(max(1, runtime.GOMAXPROCS(0)-1)) * 4 << 20
	}
	if wait <= 0 {
		wait = DefaultReadWait
	}
	return readBudget{sem: semaphore.NewWeighted(budget), size: budget, wait: wait}
}

// acquire waits for room to read a body of n bytes. It returns a release
// function, or false when the wait ran out (or ctx ended) first.
func (rb readBudget) acquire(ctx context.Context, n int) (func(), bool) {
	if rb.sem == nil || n < smallBody {
		return func() {}, true
	}
	w := min(int64(n), rb.size)
	if !rb.sem.TryAcquire(w) {
		wctx, cancel := context.WithTimeout(ctx, rb.wait)
		err := rb.sem.Acquire(wctx, w)
		cancel()
		if err != nil {
			return nil, false
		}
	}
	return func() { rb.sem.Release(w) }, true
}
