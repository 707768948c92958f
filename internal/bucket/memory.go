package bucket

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// MemoryOptions configures a Memory store. The zero value is ready to use.
type MemoryOptions struct {
	// Now returns the current time; nil means time.Now. TakeAt ignores it.
	Now func() time.Time
	// Shards is the number of independently locked partitions of the buckets,
	// rounded up to a power of two; 0 means 32. More shards means less lock
	// contention between requests on different buckets.
	Shards int
}

// defaultShards: a shard costs one mutex and one small map, and enough of them
// keep requests for different users from queueing on one lock on larger machines.
// BenchmarkMemoryTake on 2 cores measures 1 and 32 shards within noise of each
// other, so the number is not tuned beyond that.
const defaultShards = 32

// Memory is an in-process Store with the same semantics as the Redis store, for a
// single replica. It is safe for concurrent use. Memory stays bounded without a
// background goroutine: a bucket whose TAT is not after now is full, which is the
// same as absent, so every Take also drops a few such buckets from the shards it
// locked.
type Memory struct {
	now    func() time.Time
	seed   maphash.Seed
	mask   uint64
	shards []memShard
}

// memShard holds the buckets whose key hashes to it. Buckets live in a dense slice
// so that the eviction sweep can walk it with a cursor (Go maps have none); the
// map gives a key's index in the slice.
type memShard struct {
	mu      sync.Mutex
	index   map[string]int
	entries []memEntry
	cursor  int
	// Keep neighbouring shards' mutexes off one cache line.
	_ [64]byte
}

type memEntry struct {
	key string
	tat int64 // theoretical arrival time, µs since the Unix epoch
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store. It starts no goroutine.
func NewMemory(opts MemoryOptions) *Memory {
	n := 1
	for n < opts.Shards {
		n <<= 1
	}
	if opts.Shards <= 0 {
		n = defaultShards
	}
	m := &Memory{
		now:    opts.Now,
		seed:   maphash.MakeSeed(),
		mask:   uint64(n - 1),
		shards: make([]memShard, n),
	}
	if m.now == nil {
		m.now = time.Now
	}
	for i := range m.shards {
		m.shards[i].index = make(map[string]int)
	}
	return m
}

// Take charges every charge or none, at the current time. ctx is only checked
// before starting: a decision in memory takes well under a microsecond.
func (m *Memory) Take(ctx context.Context, charges []Charge) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bucket: memory take: %w", err)
	}
	return m.TakeAt(m.now(), charges)
}

// smallTake is the number of charges a Take handles without allocating scratch
// space; a request usually charges at most four buckets.
const smallTake = 8

// TakeAt is Take at the given time.
func (m *Memory) TakeAt(now time.Time, charges []Charge) (Result, error) {
	n := len(charges)
	if n == 0 {
		return Result{Allowed: true}, nil
	}
	var (
		shapesBuf [smallTake]shape
		shardsBuf [smallTake]int
		orderBuf  [smallTake]int
		decBuf    [smallTake]decision
	)
	shapes, shardOf, order, decs := shapesBuf[:0], shardsBuf[:0], orderBuf[:0], decBuf[:0]
	if n > smallTake {
		shapes, shardOf, order, decs = make([]shape, 0, n), make([]int, 0, n), make([]int, 0, n), make([]decision, 0, n)
	}
	for _, c := range charges {
		s, err := shapeOf(c)
		if err != nil {
			return Result{}, err
		}
		shapes = append(shapes, s)
		shardOf = append(shardOf, int(maphash.String(m.seed, c.Key)&m.mask))
	}
	if key, dup := duplicateKey(charges); dup {
		return Result{}, errDuplicate(key)
	}

	// Lock every shard involved in ascending order, so that concurrent Takes over
	// overlapping shards cannot deadlock, and hold them all while deciding: that is
	// what makes a Take all-or-nothing across buckets in different shards.
	for _, s := range shardOf {
		order = insertUnique(order, s)
	}
	for _, s := range order {
		m.shards[s].mu.Lock()
	}
	defer func() {
		for _, s := range order {
			m.shards[s].mu.Unlock()
		}
	}()

	nowUs := now.UnixMicro()
	res := Result{Allowed: true, Buckets: make([]BucketState, n)}
	for i, c := range charges {
		d := decide(shapes[i], m.shards[shardOf[i]].tatLocked(c.Key), nowUs)
		decs = append(decs, d)
		if d.denied {
			res.Allowed = false
			res.RetryAfter = max(res.RetryAfter, time.Duration(d.retryAfter)*time.Microsecond)
		}
	}
	for i, d := range decs {
		res.Buckets[i] = d.state(shapes[i], nowUs, res.Allowed)
		if res.Allowed {
			m.shards[shardOf[i]].setLocked(charges[i].Key, d.newTAT)
		}
	}
	for _, s := range order {
		// Sweep a little more than this Take can have inserted, so that the number
		// of dead buckets in a shard cannot grow without bound.
		m.shards[s].sweepLocked(nowUs, 2*n+2)
	}
	return res, nil
}

// insertUnique inserts v into the sorted slice s unless present.
func insertUnique(s []int, v int) []int {
	i := 0
	for i < len(s) && s[i] < v {
		i++
	}
	if i < len(s) && s[i] == v {
		return s
	}
	s = append(s, 0)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// Len returns the number of buckets held, including full buckets not yet swept.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

// tatLocked returns key's TAT, or 0 when the shard does not hold it.
func (sh *memShard) tatLocked(key string) int64 {
	if i, ok := sh.index[key]; ok {
		return sh.entries[i].tat
	}
	return 0
}

func (sh *memShard) setLocked(key string, tat int64) {
	if i, ok := sh.index[key]; ok {
		sh.entries[i].tat = tat
		return
	}
	sh.index[key] = len(sh.entries)
	sh.entries = append(sh.entries, memEntry{key: key, tat: tat})
}

// sweepLocked examines up to budget buckets from the cursor on, dropping those that
// are full at now (TAT <= now): they are indistinguishable from absent ones.
func (sh *memShard) sweepLocked(now int64, budget int) {
	for ; budget > 0 && len(sh.entries) > 0; budget-- {
		if sh.cursor >= len(sh.entries) {
			sh.cursor = 0
		}
		e := sh.entries[sh.cursor]
		if e.tat > now {
			sh.cursor++
			continue
		}
		// Move the last entry into the hole; the cursor stays to examine it next.
		last := len(sh.entries) - 1
		if sh.cursor != last {
			moved := sh.entries[last]
			sh.entries[sh.cursor] = moved
			sh.index[moved.key] = sh.cursor
		}
		sh.entries[last] = memEntry{}
		sh.entries = sh.entries[:last]
		delete(sh.index, e.key)
	}
	// Give memory back once a shard has shrunk well below what it once held.
	if c := cap(sh.entries); c > 1024 && len(sh.entries) < c/4 {
		sh.entries = append([]memEntry(nil), sh.entries...)
		// Go maps never shrink either: rebuild the index at the new size.
		sh.index = make(map[string]int, len(sh.entries))
		for i, e := range sh.entries {
			sh.index[e.key] = i
		}
	}
}
