package bucket

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

func TestMemoryConformanceWithDenialCache(t *testing.T) {
	runConformance(t, func(t *testing.T) harness {
		h := memoryHarness(NewMemory(MemoryOptions{}))
		h.store = NewDenialCache(h.store, DenialCacheOptions{})
		return h
	})
}

func TestRedisConformanceWithDenialCache(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	runConformance(t, func(t *testing.T) harness {
		h := redisHarness(c)
		h.store = NewDenialCache(h.store, DenialCacheOptions{})
		return h
	})
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingStore counts the Takes that reach the store it wraps.
type countingStore struct {
	Store
	calls atomic.Int64
}

func (s *countingStore) Take(ctx context.Context, charges []Charge) (Result, error) {
	s.calls.Add(1)
	return s.Store.Take(ctx, charges)
}

func TestDenialCacheDeniesOnlyWhatTheStoreWould(t *testing.T) {
	a := Charge{Key: unsalted.Key("cache", ScopeUser, "", "a"), Limit: lim(4, 4*hour), Cost: 2}
	b := Charge{Key: unsalted.Key("cache", ScopeShared, "", ""), Limit: lim(10, hour), Cost: 1}
	with := func(c Charge, f func(*Charge)) Charge { f(&c); return c }
	for _, tc := range []struct {
		name    string
		advance time.Duration
		charges []Charge
		// local: answered without a store call.
		local bool
		want  Result
		err   error
	}{
		{"same cost while waiting", 30 * time.Minute, []Charge{a}, true,
			Result{RetryAfter: 90 * time.Minute, Buckets: []BucketState{{Denied: true, RetryAfter: 90 * time.Minute}}}, nil},
		{"larger cost while waiting", 0, []Charge{with(a, func(c *Charge) { c.Cost = 3 })}, true,
			Result{RetryAfter: 2 * hour, Buckets: []BucketState{{Denied: true, RetryAfter: 2 * hour}}}, nil},
		{"smaller cost asks the store", 0, []Charge{with(a, func(c *Charge) { c.Cost = 1 })}, false,
			Result{RetryAfter: hour, Buckets: []BucketState{{Denied: true, RetryAfter: hour}}}, nil},
		{"after the wait asks the store", 2 * hour, []Charge{a}, false,
			Result{Allowed: true, Buckets: []BucketState{{Remaining: 0}}}, nil},
		{"changed limit asks the store", 0, []Charge{with(a, func(c *Charge) { c.Limit = lim(8, 4*hour) })}, false,
			Result{RetryAfter: hour, Buckets: []BucketState{{Denied: true, RetryAfter: hour}}}, nil},
		{"other buckets of the take are not denied", 0, []Charge{b, a}, true,
			Result{RetryAfter: 2 * hour, Buckets: []BucketState{{}, {Denied: true, RetryAfter: 2 * hour}}}, nil},
		{"invalid take gets the store's error", 0, []Charge{a, a}, false, Result{}, ErrInvalidCharge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
			store := &countingStore{Store: NewMemory(MemoryOptions{Now: clock.Now})}
			cache := NewDenialCache(store, DenialCacheOptions{Now: clock.Now})
			// Empty a's bucket, then one denial: 2h until it holds 2 tokens.
			take(t, cache, a)
			take(t, cache, a)
			wantDenied(t, take(t, cache, a))
			if n := cache.Len(); n != 1 {
				t.Fatalf("entries after one denial: got %d, want 1", n)
			}

			clock.advance(tc.advance)
			before := store.calls.Load()
			got, err := cache.Take(context.Background(), tc.charges)
			if tc.err != nil || err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got error %v, want %v", err, tc.err)
				}
				return
			}
			if !resultsEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if local := store.calls.Load() == before; local != tc.local {
				t.Errorf("answered locally: got %v, want %v", local, tc.local)
			}
		})
	}
}

func TestDenialCacheForgetsExpiredAndBoundsEntries(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	const maxEntries = 64
	cache := NewDenialCache(NewMemory(MemoryOptions{Now: clock.Now}), DenialCacheOptions{Now: clock.Now, MaxEntries: maxEntries})
	deny := func(i int) {
		c := Charge{Key: unsalted.Key("bound", ScopeUser, "", strconv.Itoa(i)), Limit: lim(1, time.Minute), Cost: 1}
		take(t, cache, c)
		wantDenied(t, take(t, cache, c))
	}
	for i := range 10 * maxEntries {
		deny(i)
	}
	// Each shard holds at most its share, so the cache never exceeds its bound.
	if n := cache.Len(); n > maxEntries {
		t.Errorf("entries after %d denials: got %d, want at most %d", 10*maxEntries, n, maxEntries)
	}
	// Every entry has expired: meeting one drops it, and the store decides.
	clock.advance(time.Hour)
	for i := range 10 * maxEntries {
		c := Charge{Key: unsalted.Key("bound", ScopeUser, "", strconv.Itoa(i)), Limit: lim(1, time.Minute), Cost: 1}
		wantAllowed(t, take(t, cache, c), 0)
	}
	if n := cache.Len(); n != 0 {
		t.Errorf("entries after meeting every expired one: got %d, want 0", n)
	}
}

func TestRedisFloodOverLimitCallsRedisTenTimesLess(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatalf("CONFIG RESETSTAT: %v", err)
	}
	cache := NewDenialCache(NewRedis(c, RedisOptions{}), DenialCacheOptions{})
	const maxTokens, workers, each = 5, 64, 50
	ch := Charge{Key: unsalted.Key("flood", ScopeShared, "", ""), Limit: lim(maxTokens, hour), Cost: 1}
	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				res, err := cache.Take(ctx, []Charge{ch})
				if err != nil {
					failed.Add(1)
					return
				}
				if res.Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("got %d errors, want none", n)
	}
	// Five tokens an hour: the test cannot live long enough to see a sixth.
	if got := admitted.Load(); got != maxTokens {
		t.Errorf("admitted: got %d, want %d", got, maxTokens)
	}
	calls := scriptCalls(t, c)
	t.Logf("%d requests, %d script calls", workers*each, calls)
	if requests := int64(workers * each); calls*10 > requests {
		t.Errorf("script calls for %d requests: got %d, want at most %d", requests, calls, requests/10)
	}
}
