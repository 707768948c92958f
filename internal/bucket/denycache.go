package bucket

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// DenialCacheOptions configures a DenialCache. The zero value is ready to use.
type DenialCacheOptions struct {
	// Now returns the current time; nil means time.Now. Only differences between
	// its readings matter, so time.Now's monotonic clock makes the cache immune
	// to wall-clock steps.
	Now func() time.Time
	// MaxEntries bounds the buckets remembered; 0 means 65536. When full, a new
	// denial replaces a random entry: forgetting one only costs a store call.
	MaxEntries int
}

// defaultDenialEntries: an entry is a key (~60 bytes) plus ~50 bytes of map
// overhead, so the default bound is a few MiB.
const defaultDenialEntries = 1 << 16

// denialShards is the number of independently locked partitions; as for
// Memory, enough that concurrent requests rarely share a lock.
const denialShards = 32

// DenialCache is a Store that answers, without asking the store it wraps, the
// Takes that store is certain to deny: after a denial it remembers, for each
// denying bucket, when that bucket will hold the cost it was asked for, and
// until then it denies any Take asking that bucket for as much or more.
//
// Why this is exact: a store never refunds tokens, so a bucket's TAT (see
// decide) never moves back, and a cost at least as large needs a TAT at
// least as far back; so the time at which the bucket can serve the cost can
// only stay or move later than the one the denial reported. The cache counts
// that time from when the denied Take was sent, which is no later than when
// the store decided it, so its deadline is at or before the store's real one:
// it only denies what the store would deny. It stops being exact when tokens
// come back by other means: a bucket deleted in Redis by hand, a Redis
// failover that lost writes, or a limit changed under the same key (entries
// record the Limit and only match the same one, but during a rolling policy
// change a replica on the new, smaller limit can move the TAT back under an
// entry another replica recorded: that entry over-denies for at most its wait).
//
// A locally denied Take reports, for each remembered bucket, Denied, Remaining
// 0 (it holds less than the cost; the cache does not follow refills) and the
// remaining wait. Its other buckets are reported not denied with Remaining 0:
// the store was not asked, so a bucket that would also deny but is not
// remembered makes Result.RetryAfter shorter than the store's answer.
//
// It starts no goroutine: expired entries are dropped when met, and each new
// entry first sweeps a few others.
type DenialCache struct {
	next    Store
	now     func() time.Time
	epoch   time.Time // times are kept as nanoseconds since epoch
	seed    maphash.Seed
	maxPer  int          // entries per shard
	entries atomic.Int64 // over all shards; 0 lets Take skip every lookup
	shards  [denialShards]denialShard
}

type denialShard struct {
	mu sync.Mutex
	m  map[string]denial
	// Keep neighbouring shards' mutexes off one cache line.
	_ [64]byte
}

// denial is what one denial taught about one bucket.
type denial struct {
	limit Limit
	cost  int64
	until int64 // ns since the cache's epoch
}

var _ Store = (*DenialCache)(nil)

// NewDenialCache returns a DenialCache in front of next. It starts no
// goroutine.
func NewDenialCache(next Store, opts DenialCacheOptions) *DenialCache {
	d := &DenialCache{next: next, now: opts.Now, seed: maphash.MakeSeed()}
	if d.now == nil {
		d.now = time.Now
	}
	d.epoch = d.now()
	total := opts.MaxEntries
	if total <= 0 {
		total = defaultDenialEntries
	}
	d.maxPer = max(1, total/denialShards)
	for i := range d.shards {
		d.shards[i].m = make(map[string]denial)
	}
	return d
}

// Take answers a Take the store would surely deny from memory, and passes any
// other to the wrapped store, remembering the buckets that deny it.
func (d *DenialCache) Take(ctx context.Context, charges []Charge) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bucket: denial cache: %w", err)
	}
	now := d.clock()
	if d.entries.Load() > 0 {
		if res, ok := d.deny(now, charges); ok {
			return res, nil
		}
	}
	res, err := d.next.Take(ctx, charges)
	if err != nil || res.Allowed || len(res.Buckets) != len(charges) {
		return res, err
	}
	for i, b := range res.Buckets {
		if b.Denied && b.RetryAfter > 0 {
			// now was read before the Take was sent.
			d.remember(charges[i], now+int64(b.RetryAfter))
		}
	}
	return res, nil
}

// Len returns the number of buckets remembered, including expired entries not
// yet dropped.
func (d *DenialCache) Len() int { return int(d.entries.Load()) }

func (d *DenialCache) clock() int64 { return int64(d.now().Sub(d.epoch)) }

func (d *DenialCache) shard(key string) *denialShard {
	return &d.shards[maphash.String(d.seed, key)%denialShards]
}

// deny returns a denial when some charge hits a live entry; ok is false when
// the store must decide.
func (d *DenialCache) deny(now int64, charges []Charge) (res Result, ok bool) {
	var waitBuf [smallTake]int64
	wait := waitBuf[:0]
	if len(charges) > smallTake {
		wait = make([]int64, 0, len(charges))
	}
	for _, c := range charges {
		wait = append(wait, d.lookup(now, c))
		ok = ok || wait[len(wait)-1] > 0
	}
	if !ok {
		return Result{}, false
	}
	// An invalid Take must get the store's error, not a denial.
	if !valid(charges) {
		return Result{}, false
	}
	res.Buckets = make([]BucketState, len(charges))
	for i, w := range wait {
		if w > 0 {
			ra := time.Duration(w)
			res.Buckets[i] = BucketState{Denied: true, RetryAfter: ra}
			res.RetryAfter = max(res.RetryAfter, ra)
		}
	}
	return res, true
}

// lookup returns how long c's bucket is still certain to deny c, or 0.
func (d *DenialCache) lookup(now int64, c Charge) int64 {
	sh := d.shard(c.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[c.Key]
	if !ok {
		return 0
	}
	if e.until <= now {
		delete(sh.m, c.Key)
		d.entries.Add(-1)
		return 0
	}
	if e.limit != c.Limit || c.Cost < e.cost {
		return 0
	}
	return e.until - now
}

// remember records that c's bucket denies a cost of c.Cost until until.
func (d *DenialCache) remember(c Charge, until int64) {
	sh := d.shard(c.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := d.clock()
	if old, ok := sh.m[c.Key]; ok {
		// Keep the old entry when it says more: a smaller cost denied as long.
		if old.limit == c.Limit && old.until > now && old.cost <= c.Cost && old.until >= until {
			return
		}
		sh.m[c.Key] = denial{limit: c.Limit, cost: c.Cost, until: until}
		return
	}
	d.sweepLocked(sh, now)
	sh.m[c.Key] = denial{limit: c.Limit, cost: c.Cost, until: until}
	d.entries.Add(1)
}

// sweepBudget is how many entries an insertion examines: more than the one it
// adds, so expired entries cannot pile up while denials keep coming.
const sweepBudget = 4

// sweepLocked drops expired entries among a few, and one live entry when the
// shard is full. Ranging over a Go map starts at a random place, so repeated
// sweeps reach every entry.
func (d *DenialCache) sweepLocked(sh *denialShard, now int64) {
	budget := sweepBudget
	for k, e := range sh.m {
		if budget == 0 {
			break
		}
		budget--
		if e.until <= now || len(sh.m) >= d.maxPer {
			delete(sh.m, k)
			d.entries.Add(-1)
		}
	}
}

// valid reports whether a store would accept charges.
func valid(charges []Charge) bool {
	for _, c := range charges {
		if _, err := shapeOf(c); err != nil {
			return false
		}
	}
	_, dup := duplicateKey(charges)
	return !dup
}
