package bucket

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// harness is one store under the conformance suite.
type harness struct {
	store Store
	// stored returns the TAT (µs since the Unix epoch) the store holds for key and
	// the time until it expires; ok is false when the store holds nothing.
	stored func(t *testing.T, key string) (tat int64, ttl time.Duration, ok bool)
}

// behaviour is one row of the suite every store must pass. server is unique to
// the row, so that rows sharing a Redis cannot see each other's keys.
type behaviour struct {
	name string
	run  func(t *testing.T, h harness, server string)
}

// runConformance runs every behaviour, each with a fresh harness from newHarness.
func runConformance(t *testing.T, newHarness func(t *testing.T) harness) {
	for _, b := range behaviours {
		t.Run(b.name, func(t *testing.T) {
			b.run(t, newHarness(t), strings.ReplaceAll(t.Name(), "/", "."))
		})
	}
}

const hour = time.Hour

func lim(maxTokens int64, period time.Duration) Limit {
	return Limit{MaxTokens: maxTokens, RefillPeriod: period}
}

func take(t *testing.T, s Store, charges ...Charge) Result {
	t.Helper()
	res, err := s.Take(context.Background(), charges)
	if err != nil {
		t.Fatalf("Take: got error %v, want a decision", err)
	}
	return res
}

// timedTake is take that also returns the time since start, an upper bound on
// how much the store's clock can have moved between start and this decision.
func timedTake(t *testing.T, s Store, start time.Time, charges ...Charge) (Result, time.Duration) {
	t.Helper()
	res := take(t, s, charges...)
	return res, time.Since(start)
}

func wantAllowed(t *testing.T, res Result, remaining ...int64) {
	t.Helper()
	if !res.Allowed || res.RetryAfter != 0 {
		t.Fatalf("got Allowed=%v RetryAfter=%v, want allowed with no retry-after", res.Allowed, res.RetryAfter)
	}
	wantRemaining(t, res, remaining...)
}

func wantDenied(t *testing.T, res Result) {
	t.Helper()
	if res.Allowed {
		t.Fatalf("got allowed (%+v), want denied", res)
	}
}

func wantRemaining(t *testing.T, res Result, remaining ...int64) {
	t.Helper()
	if len(res.Buckets) != len(remaining) {
		t.Fatalf("got %d buckets, want %d", len(res.Buckets), len(remaining))
	}
	for i, r := range remaining {
		if got := res.Buckets[i].Remaining; got != r {
			t.Errorf("bucket %d: got Remaining %d, want %d", i, got, r)
		}
	}
}

// wantWithin checks lo <= got <= hi: the store's clock moves while the test runs,
// so durations it reports are only known within the time the test measured.
func wantWithin(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s: got %v, want within [%v, %v]", what, got, lo, hi)
	}
}

func wantStored(t *testing.T, h harness, key string) (int64, time.Duration) {
	t.Helper()
	tat, ttl, ok := h.stored(t, key)
	if !ok {
		t.Fatalf("%s: got absent, want stored", key)
	}
	return tat, ttl
}

func wantAbsent(t *testing.T, h harness, key string) {
	t.Helper()
	if tat, _, ok := h.stored(t, key); ok {
		t.Fatalf("%s: got stored TAT %d, want absent", key, tat)
	}
}

var behaviours = []behaviour{
	{"capacity then denial", func(t *testing.T, h harness, server string) {
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(3, 3*hour), Cost: 1}
		start := time.Now()
		for want := int64(2); want >= 0; want-- {
			wantAllowed(t, take(t, h.store, c), want)
		}
		res, elapsed := timedTake(t, h.store, start, c)
		wantDenied(t, res)
		wantRemaining(t, res, 0)
		wantWithin(t, "RetryAfter", res.RetryAfter, hour-elapsed, hour)
	}},

	{"refill over time", func(t *testing.T, h harness, server string) {
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(2, 20*time.Millisecond), Cost: 1}
		take(t, h.store, c)
		take(t, h.store, c)
		res := take(t, h.store, c)
		if res.Allowed {
			t.Skip("the machine took over 10ms for two decisions; refill not observable")
		}
		// Waiting for the refill is the behaviour under test. The sleep may
		// overshoot on a busy machine by a whole refill (10 ms a token), so
		// the bucket then holds one token more: allowed either way.
		time.Sleep(res.RetryAfter)
		res = take(t, h.store, c)
		if !res.Allowed || res.RetryAfter != 0 || len(res.Buckets) != 1 {
			t.Fatalf("got %+v, want allowed with no retry-after, one bucket", res)
		}
		if r := res.Buckets[0].Remaining; r > 1 {
			t.Errorf("bucket 0: got Remaining %d after waiting for one token, want 0 or 1", r)
		}
	}},

	{"all or nothing across buckets", func(t *testing.T, h harness, server string) {
		shared := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(10, hour), Cost: 1}
		tool := Charge{Key: unsalted.Key(server, ScopeTool, "search", ""), Limit: lim(1, hour), Cost: 1}
		wantAllowed(t, take(t, h.store, shared, tool), 9, 0)
		before, _ := wantStored(t, h, shared.Key)

		res := take(t, h.store, shared, tool)
		wantDenied(t, res)
		if res.Buckets[0].Denied || res.Buckets[0].RetryAfter != 0 || !res.Buckets[1].Denied {
			t.Errorf("got buckets %+v, want only the tool bucket denied", res.Buckets)
		}
		if after, _ := wantStored(t, h, shared.Key); after != before {
			t.Errorf("shared TAT after a denial: got %d, want unchanged %d", after, before)
		}
		// Only the first Take charged the shared bucket.
		wantAllowed(t, take(t, h.store, shared), 8)
	}},

	{"plan, tenant and window buckets of one request, together", func(t *testing.T, h harness, server string) {
		// What a pro user of tenant acme charges: the shared bucket, the
		// plan's two per-user windows and the plan's tenant bucket.
		charges := []Charge{
			{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(100, hour), Cost: 1},
			{Key: unsalted.PlanKey(server, ScopeUser, "", "alice", "pro", 0), Limit: lim(5, time.Minute), Cost: 1},
			{Key: unsalted.PlanKey(server, ScopeUser, "", "alice", "pro", 1), Limit: lim(50, 24*hour), Cost: 1},
			{Key: unsalted.PlanKey(server, ScopeTenant, "", "acme", "pro", 0), Limit: lim(2, hour), Cost: 1},
		}
		wantAllowed(t, take(t, h.store, charges...), 99, 4, 49, 1)
		wantAllowed(t, take(t, h.store, charges...), 98, 3, 48, 0)
		res := take(t, h.store, charges...)
		wantDenied(t, res)
		if !res.Buckets[3].Denied || res.Buckets[0].Denied || res.Buckets[1].Denied || res.Buckets[2].Denied {
			t.Errorf("got buckets %+v, want only the tenant's denied", res.Buckets)
		}
		// The same user on no plan is charged other keys, full.
		free := Charge{Key: unsalted.Key(server, ScopeUser, "", "alice"), Limit: lim(5, time.Minute), Cost: 1}
		wantAllowed(t, take(t, h.store, free), 4)
	}},

	{"cost above one", func(t *testing.T, h harness, server string) {
		c := Charge{Key: unsalted.Key(server, ScopeTool, "expensive", ""), Limit: lim(10, 10*hour), Cost: 4}
		start := time.Now()
		wantAllowed(t, take(t, h.store, c), 6)
		wantAllowed(t, take(t, h.store, c), 2)
		res, elapsed := timedTake(t, h.store, start, c)
		wantDenied(t, res)
		wantRemaining(t, res, 2)
		// Two tokens are missing, one per hour.
		wantWithin(t, "RetryAfter", res.RetryAfter, 2*hour-elapsed, 2*hour)
		c.Cost = 2
		wantAllowed(t, take(t, h.store, c), 0)
	}},

	{"denial reports every bucket", func(t *testing.T, h harness, server string) {
		a := Charge{Key: unsalted.Key(server, ScopeUser, "", "alice"), Limit: lim(1, hour), Cost: 1}
		b := Charge{Key: unsalted.Key(server, ScopeUserTool, "search", "alice"), Limit: lim(1, 2*hour), Cost: 1}
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(5, hour), Cost: 1}
		start := time.Now()
		take(t, h.store, a)
		take(t, h.store, b)
		res, elapsed := timedTake(t, h.store, start, a, b, c)
		wantDenied(t, res)
		wantRemaining(t, res, 0, 0, 5)
		// The request waits for the slowest denying bucket.
		wantWithin(t, "Result.RetryAfter", res.RetryAfter, 2*hour-elapsed, 2*hour)
		wantWithin(t, "bucket a RetryAfter", res.Buckets[0].RetryAfter, hour-elapsed, hour)
		wantWithin(t, "bucket b RetryAfter", res.Buckets[1].RetryAfter, 2*hour-elapsed, 2*hour)
		if got := res.Buckets[2]; got.Denied || got.RetryAfter != 0 {
			t.Errorf("bucket c: got %+v, want not denied with no retry-after", got)
		}
		if !res.Buckets[0].Denied || !res.Buckets[1].Denied {
			t.Errorf("got buckets %+v, want a and b denied", res.Buckets)
		}
		wantAbsent(t, h, c.Key)
	}},

	{"no write on deny", func(t *testing.T, h harness, server string) {
		fresh := Charge{Key: unsalted.Key(server, ScopeMethod, "resources/read", ""), Limit: lim(5, hour), Cost: 1}
		full := Charge{Key: unsalted.Key(server, ScopeTool, "search", ""), Limit: lim(1, hour), Cost: 1}
		take(t, h.store, full)
		before, _ := wantStored(t, h, full.Key)
		wantDenied(t, take(t, h.store, fresh, full))
		wantAbsent(t, h, fresh.Key)
		if after, _ := wantStored(t, h, full.Key); after != before {
			t.Errorf("denying bucket's TAT: got %d, want unchanged %d", after, before)
		}
	}},

	{"TTL is the time until full", func(t *testing.T, h harness, server string) {
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(4, 4*hour), Cost: 1}
		start := time.Now()
		take(t, h.store, c)
		_, ttl := wantStored(t, h, c.Key)
		elapsed := time.Since(start)
		// Redis keeps milliseconds and the script rounds the expiry up.
		wantWithin(t, "TTL after one token", ttl, hour-elapsed-time.Millisecond, hour+time.Millisecond)
		c.Cost = 2
		take(t, h.store, c)
		_, ttl = wantStored(t, h, c.Key)
		elapsed = time.Since(start)
		wantWithin(t, "TTL after three tokens", ttl, 3*hour-elapsed-time.Millisecond, 3*hour+time.Millisecond)
	}},

	{"exact retry after", func(t *testing.T, h harness, server string) {
		// 7 tokens per 100s: T = ceil(100s/7) = 14285715µs, not a round number.
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(7, 100*time.Second), Cost: 7}
		const interval = 14285715 * time.Microsecond
		start := time.Now()
		take(t, h.store, c)
		c.Cost = 3
		res, elapsed := timedTake(t, h.store, start, c)
		wantDenied(t, res)
		wantWithin(t, "RetryAfter", res.RetryAfter, 3*interval-elapsed, 3*interval)
	}},

	{"1ms period", func(t *testing.T, h harness, server string) {
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(10, time.Millisecond), Cost: 10}
		start := time.Now()
		wantAllowed(t, take(t, h.store, c), 0)
		// The key expires at the first whole millisecond at or after the refill
		// (Redis expiries are in ms), counted from the current millisecond.
		if _, ttl, ok := h.stored(t, c.Key); ok && ttl > 2*time.Millisecond {
			t.Errorf("TTL: got %v, want at most 2ms", ttl)
		}
		res, elapsed := timedTake(t, h.store, start, c)
		if elapsed < time.Millisecond && res.Allowed {
			t.Fatalf("got allowed %v after draining a bucket that refills in 1ms, want denied", elapsed)
		}
		if !res.Allowed {
			wantWithin(t, "RetryAfter", res.RetryAfter, time.Microsecond, time.Millisecond)
			// Waiting for the refill is the behaviour under test.
			time.Sleep(res.RetryAfter)
			wantAllowed(t, take(t, h.store, c), 0)
		}
	}},

	{"30-day period", func(t *testing.T, h harness, server string) {
		const month = 30 * 24 * hour
		c := Charge{Key: unsalted.Key(server, ScopeUser, "", "bob"), Limit: lim(10, month), Cost: 10}
		start := time.Now()
		wantAllowed(t, take(t, h.store, c), 0)
		_, ttl := wantStored(t, h, c.Key)
		elapsed := time.Since(start)
		wantWithin(t, "TTL", ttl, month-elapsed-time.Millisecond, month+time.Millisecond)
		c.Cost = 1
		res, elapsed := timedTake(t, h.store, start, c)
		wantDenied(t, res)
		wantWithin(t, "RetryAfter", res.RetryAfter, month/10-elapsed, month/10)
	}},

	{"invalid charges rejected", func(t *testing.T, h harness, server string) {
		key := unsalted.Key(server, ScopeShared, "", "")
		ok := Charge{Key: key, Limit: lim(10, hour), Cost: 1}
		with := func(f func(*Charge)) Charge { c := ok; f(&c); return c }
		for _, tc := range []struct {
			name    string
			charges []Charge
		}{
			{"empty key", []Charge{with(func(c *Charge) { c.Key = "" })}},
			{"zero cost", []Charge{with(func(c *Charge) { c.Cost = 0 })}},
			{"negative cost", []Charge{with(func(c *Charge) { c.Cost = -1 })}},
			{"cost above maxTokens", []Charge{with(func(c *Charge) { c.Cost = 11 })}},
			{"zero maxTokens", []Charge{with(func(c *Charge) { c.Limit.MaxTokens = 0 })}},
			{"zero period", []Charge{with(func(c *Charge) { c.Limit.RefillPeriod = 0 })}},
			{"under 1µs per token", []Charge{with(func(c *Charge) { c.Limit = lim(1001, time.Millisecond) })}},
			{"period above maximum", []Charge{with(func(c *Charge) { c.Limit.RefillPeriod = MaxRefillPeriod + 1 })}},
			{"duplicate key", []Charge{ok, ok}},
			{"valid then invalid", []Charge{ok, with(func(c *Charge) { c.Key = key + "x"; c.Cost = 0 })}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := h.store.Take(context.Background(), tc.charges)
				if !errors.Is(err, ErrInvalidCharge) {
					t.Fatalf("got error %v, want ErrInvalidCharge", err)
				}
				wantAbsent(t, h, key)
			})
		}
	}},

	{"no charges allowed", func(t *testing.T, h harness, server string) {
		wantAllowed(t, take(t, h.store))
	}},

	{"cancelled context is an error", func(t *testing.T, h harness, server string) {
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(1, hour), Cost: 1}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := h.store.Take(ctx, []Charge{c}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got error %v, want context.Canceled", err)
		}
		wantAbsent(t, h, c.Key)
	}},

	{"concurrent takes get their own results", func(t *testing.T, h harness, server string) {
		// Many callers at once, each on its own bucket: whatever a store does to
		// serve them together (coalesced pipelines), each must see its own
		// bucket's countdown.
		const callers, maxTokens = 32, 5
		errs := make(chan error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			c := Charge{Key: unsalted.Key(server, ScopeUser, "", "u"+strconv.Itoa(i)), Limit: lim(maxTokens, hour), Cost: 1}
			wg.Go(func() {
				for want := int64(maxTokens - 1); want >= -1; want-- {
					res, err := h.store.Take(context.Background(), []Charge{c})
					switch {
					case err != nil:
						errs <- err
						return
					case want >= 0 && (!res.Allowed || res.Buckets[0].Remaining != want):
						errs <- fmt.Errorf("%s: got %+v, want allowed with %d remaining", c.Key, res, want)
						return
					case want < 0 && res.Allowed:
						errs <- fmt.Errorf("%s: got allowed past its %d tokens, want denied", c.Key, maxTokens)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}},

	{"concurrency exactness", func(t *testing.T, h harness, server string) {
		// 5 tokens per 50ms (100/s), hammered by 64 goroutines for about 100ms.
		const maxTokens, period, workers, run = 5, 50 * time.Millisecond, 64, 100 * time.Millisecond
		c := Charge{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: lim(maxTokens, period), Cost: 1}
		var admitted, failed atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		stop := start.Add(run)
		for range workers {
			wg.Go(func() {
				for time.Now().Before(stop) {
					res, err := h.store.Take(context.Background(), []Charge{c})
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
		elapsed := time.Since(start)
		if n := failed.Load(); n > 0 {
			t.Fatalf("got %d errors, want none", n)
		}
		// Every decision happened within elapsed, so no more than the burst plus
		// what refilled during it can have been admitted.
		most := maxTokens + int64(elapsed*maxTokens/period)
		if got := admitted.Load(); got < maxTokens || got > most {
			t.Errorf("admitted %d in %v: got %d, want within [%d, %d]", got, elapsed, got, maxTokens, most)
		}
	}},
}
