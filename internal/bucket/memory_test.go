package bucket

import (
	"context"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestShapeOf(t *testing.T) {
	for _, tc := range []struct {
		name                        string
		limit                       Limit
		cost                        int64
		interval, window, increment int64
	}{
		{"exact division", lim(10, time.Second), 1, 100_000, 1_000_000, 100_000},
		{"interval rounds up, window never below maxTokens", lim(3, time.Second), 2, 333_334, 1_000_002, 666_668},
		{"1µs per token", lim(1000, time.Millisecond), 1000, 1, 1000, 1000},
		{"sub-microsecond period remainder rounds up", lim(1, 1500*time.Nanosecond), 1, 2, 2, 2},
		{"31 days", lim(31, 31*24*time.Hour), 31, 86_400_000_000, 2_678_400_000_000, 2_678_400_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := shapeOf(Charge{Key: "k", Limit: tc.limit, Cost: tc.cost})
			if err != nil {
				t.Fatal(err)
			}
			if s.interval != tc.interval || s.window != tc.window || s.increment != tc.increment {
				t.Errorf("got T=%d W=%d inc=%d, want T=%d W=%d inc=%d", s.interval, s.window, s.increment, tc.interval, tc.window, tc.increment)
			}
		})
	}
}

// step is one TakeAt of a deterministic script.
type step struct {
	at      time.Duration // since t0
	charges []Charge
	want    Result
}

func TestMemoryTakeAt(t *testing.T) {
	a := Charge{Key: "a", Limit: lim(2, 2*time.Second), Cost: 1} // T = 1s
	b := Charge{Key: "b", Limit: lim(3, 3*time.Second), Cost: 2} // T = 1s, 2 tokens
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"burst, exact retry-after, refill", []step{
			{0, []Charge{a}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 1}}}},
			{100 * ms, []Charge{a}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 0}}}},
			{300 * ms, []Charge{a}, Result{RetryAfter: 700 * ms, Buckets: []BucketState{{Denied: true, RetryAfter: 700 * ms}}}},
			{999 * ms, []Charge{a}, Result{RetryAfter: ms, Buckets: []BucketState{{Denied: true, RetryAfter: ms}}}},
			{1000 * ms, []Charge{a}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 0}}}},
			{5000 * ms, []Charge{a}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 1}}}},
		}},
		{"partial refill counts whole tokens", []step{
			{0, []Charge{b}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 1}}}},
			// 1.5 tokens: one whole, and 0.5s until the second.
			{500 * ms, []Charge{b}, Result{RetryAfter: 500 * ms, Buckets: []BucketState{{Denied: true, Remaining: 1, RetryAfter: 500 * ms}}}},
			{1000 * ms, []Charge{b}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 0}}}},
		}},
		{"denial by one bucket charges none", []step{
			{0, []Charge{a, b}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 1}, {Remaining: 1}}}},
			{0, []Charge{a, b}, Result{RetryAfter: 1000 * ms, Buckets: []BucketState{{Remaining: 1}, {Denied: true, Remaining: 1, RetryAfter: 1000 * ms}}}},
			// a still holds the token the denied Take did not charge.
			{0, []Charge{a}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 0}}}},
		}},
		{"a TAT beyond the window is capped", []step{
			// a's limit grows to a 100s window and is drained, then shrinks back:
			// the bucket is empty under the new limit, not 98s in debt.
			{0, []Charge{{Key: "a", Limit: lim(100, 100*time.Second), Cost: 100}}, Result{Allowed: true, Buckets: []BucketState{{Remaining: 0}}}},
			{0, []Charge{a}, Result{RetryAfter: time.Second, Buckets: []BucketState{{Denied: true, RetryAfter: time.Second}}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(MemoryOptions{})
			for i, s := range tc.steps {
				got, err := m.TakeAt(at(s.at), s.charges)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if !resultsEqual(got, s.want) {
					t.Fatalf("step %d at %v: got %+v, want %+v", i, s.at, got, s.want)
				}
			}
		})
	}
}

func TestMemoryTakeUsesNow(t *testing.T) {
	now := t0
	m := NewMemory(MemoryOptions{Now: func() time.Time { return now }})
	c := Charge{Key: "k", Limit: lim(1, time.Second), Cost: 1}
	take(t, m, c)
	now = now.Add(400 * time.Millisecond)
	res := take(t, m, c)
	if want := 600 * time.Millisecond; res.RetryAfter != want {
		t.Errorf("got RetryAfter %v, want %v", res.RetryAfter, want)
	}
}

func TestMemoryEvictsFullBuckets(t *testing.T) {
	m := NewMemory(MemoryOptions{Shards: 1})
	for i := range 1000 {
		if _, err := m.TakeAt(t0, []Charge{{Key: "idle" + strconv.Itoa(i), Limit: lim(1, time.Second), Cost: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Len(); got != 1000 {
		t.Fatalf("before: got Len %d, want 1000", got)
	}
	// An hour later every idle bucket is full again; Takes on one busy bucket
	// sweep them away, a few per Take.
	busy := Charge{Key: "busy", Limit: lim(1_000_000, time.Second), Cost: 1}
	for i := range 300 {
		if _, err := m.TakeAt(at(hour+time.Duration(i)), []Charge{busy}); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Len(); got != 1 {
		t.Errorf("after: got Len %d, want 1 (the busy bucket)", got)
	}
}

func TestMemoryStaysBoundedUnderChurn(t *testing.T) {
	// 100k users, each seen once, 1000 new users per second, each bucket full
	// again after 1s: at any moment about 1000 buckets are live.
	m := NewMemory(MemoryOptions{})
	const users, perSecond = 100_000, 1000
	peak := 0
	for i := range users {
		now := at(time.Duration(i) * time.Second / perSecond)
		c := Charge{Key: "user" + strconv.Itoa(i), Limit: lim(10, 10*time.Second), Cost: 1}
		if _, err := m.TakeAt(now, []Charge{c}); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			peak = max(peak, m.Len())
		}
	}
	if most := 4 * perSecond; peak > most {
		t.Errorf("got a peak of %d buckets, want at most %d (about %d live)", peak, most, perSecond)
	}
}

func TestMemoryTakeAllocations(t *testing.T) {
	m := NewMemory(MemoryOptions{})
	charges := []Charge{
		{Key: "s", Limit: lim(1_000_000, time.Second), Cost: 1},
		{Key: "t", Limit: lim(1_000_000, time.Second), Cost: 1},
	}
	ctx := context.Background()
	// One allocation: Result.Buckets.
	if n := testing.AllocsPerRun(100, func() { _, _ = m.Take(ctx, charges) }); n != 1 {
		t.Errorf("got %v allocations per Take, want 1", n)
	}
}
