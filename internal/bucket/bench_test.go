package bucket

import (
	"context"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

// benchUsers is how many distinct users the benchmarks spread their Takes over.
const benchUsers = 1024

// benchCharges returns, per user, the charges of a tools/call: 1 or 4 buckets
// with limits large enough that every Take is allowed and writes.
func benchCharges(buckets int) [][]Charge {
	big := lim(1_000_000_000, time.Hour)
	out := make([][]Charge, benchUsers)
	for u := range out {
		id := "user" + strconv.Itoa(u)
		all := []Charge{
			{Key: unsalted.Key("bench", ScopeUser, "", id), Limit: big, Cost: 1},
			{Key: unsalted.Key("bench", ScopeShared, "", ""), Limit: big, Cost: 1},
			{Key: unsalted.Key("bench", ScopeTool, "search", ""), Limit: big, Cost: 1},
			{Key: unsalted.Key("bench", ScopeUserTool, "search", id), Limit: big, Cost: 1},
		}
		out[u] = all[:buckets]
	}
	return out
}

// parallelism makes RunParallel use goroutines goroutines.
func parallelism(goroutines int) int {
	procs := runtime.GOMAXPROCS(0)
	return (goroutines + procs - 1) / procs
}

// benchTake runs Takes of buckets charges from goroutines goroutines. Redis
// benchmarks time every Take for percentiles; in-memory ones do not, as two
// clock reads would be a good part of what they measure.
func benchTake(b *testing.B, s Store, buckets, goroutines int) {
	charges := benchCharges(buckets)
	var next atomic.Int64
	var denied atomic.Int64
	ctx := context.Background()
	_, timed := s.(*Redis)
	benchParallel(b, goroutines, timed, func() error {
		res, err := s.Take(ctx, charges[next.Add(1)%benchUsers])
		if err == nil && !res.Allowed {
			denied.Add(1)
		}
		return err
	})
	if n := denied.Load(); n > 0 {
		b.Logf("%d denials: the limits are too small for this run", n)
	}
}

// benchParallel runs op from goroutines goroutines and reports, besides ns/op,
// decisions/s and, when timed, the p50 and p99 latency of op in microseconds.
// Timing each op costs two clock reads (~50ns), small next to a Redis round
// trip.
func benchParallel(b *testing.B, goroutines int, timed bool, op func() error) {
	var mu sync.Mutex
	var all []time.Duration
	b.ReportAllocs()
	b.SetParallelism(parallelism(goroutines))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var lat []time.Duration
		for pb.Next() {
			if !timed {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				continue
			}
			t0 := time.Now()
			if err := op(); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	reportLatency(b, all)
}

// benchSequential runs op from the benchmark's goroutine alone: an unloaded
// store, where coalescing must add nothing.
func benchSequential(b *testing.B, op func() error) {
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	reportLatency(b, lat)
}

// reportLatency reports the p50 and p99 of lat in microseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Microsecond)
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

func BenchmarkMemoryTake(b *testing.B) {
	for _, buckets := range []int{1, 4} {
		for _, shards := range []int{1, 32} {
			b.Run(strconv.Itoa(buckets)+"buckets/shards="+strconv.Itoa(shards), func(b *testing.B) {
				benchTake(b, NewMemory(MemoryOptions{Shards: shards}), buckets, runtime.GOMAXPROCS(0))
			})
		}
	}
}

// BenchmarkDenialCache measures what the denial cache adds on the allow path:
// the memory store bare and behind a cache holding 1000 unrelated denials, so
// that every charge costs a lookup.
func BenchmarkDenialCache(b *testing.B) {
	for _, buckets := range []int{1, 4} {
		n := strconv.Itoa(buckets) + "buckets"
		b.Run("memory-"+n, func(b *testing.B) {
			benchTake(b, NewMemory(MemoryOptions{}), buckets, runtime.GOMAXPROCS(0))
		})
		b.Run("memory+denialcache-"+n, func(b *testing.B) {
			cache := NewDenialCache(NewMemory(MemoryOptions{}), DenialCacheOptions{})
			for i := range 1000 {
				c := []Charge{{Key: unsalted.Key("other", ScopeUser, "", strconv.Itoa(i)), Limit: lim(1, time.Hour), Cost: 1}}
				for range 2 {
					if _, err := cache.Take(context.Background(), c); err != nil {
						b.Fatal(err)
					}
				}
			}
			if cache.Len() != 1000 {
				b.Fatalf("got %d entries, want 1000", cache.Len())
			}
			benchTake(b, cache, buckets, runtime.GOMAXPROCS(0))
		})
	}
}

// BenchmarkRedis compares, from 64 goroutines over one pool of 64 connections
// to a local redis-server: a bare EVALSHA of "return 1" (the cheapest possible
// round trip), one EVALSHA of gcra.lua per decision (plain), and the store's
// coalesced Takes with 1, 2 and 4 pipelines in flight. The unloaded rows run
// one goroutine, one Take after another.
//
// Figures from the 2-core development machine, shared with other work, so only
// ratios within one run mean much (medians of -count=3, 1 bucket, decisions/s):
// with the current gcra.lua, plain 27k, coalesced 49k/59k/57k with 1/2/4 in
// flight: 2.15x plain at the default 2. With 4 buckets the script's own work
// (four GETs and SETs) dominates and pipelining saves less: 23k plain, 24k/31k
// with 2/4 in flight (1.06x/1.34x).
// Six paired runs of the old and the current script (-benchtime 3s) gave
// coalesced/plain 1.46-1.71x. Unloaded p50 39us coalesced vs 48us plain (the
// same code path: one EVALSHA, same allocations). Redis is the bottleneck:
// redis-server runs at ~95% of a core, the Go side at ~40%.
func BenchmarkRedis(b *testing.B) {
	const goroutines = 64
	c := redis.NewClient(&redis.Options{Addr: redistest.Start(b), PoolSize: goroutines, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	if err := redis.NewScript(gcraSource).Load(ctx, c).Err(); err != nil {
		b.Fatal(err)
	}

	b.Run("baseline-evalsha-return-1", func(b *testing.B) {
		script := redis.NewScript("return 1")
		if err := script.Load(ctx, c).Err(); err != nil {
			b.Fatal(err)
		}
		benchParallel(b, goroutines, true, func() error { return script.EvalSha(ctx, c, nil).Err() })
	})
	for _, buckets := range []int{1, 4} {
		n := strconv.Itoa(buckets) + "buckets"
		b.Run("plain-"+n, func(b *testing.B) {
			benchTake(b, NewRedis(c, RedisOptions{MaxBatch: 1}), buckets, goroutines)
		})
		for _, inFlight := range []int{1, 2, 4} {
			b.Run("coalesced-"+n+"/inflight="+strconv.Itoa(inFlight), func(b *testing.B) {
				benchTake(b, NewRedis(c, RedisOptions{MaxInFlight: inFlight}), buckets, goroutines)
			})
		}
	}
	for _, tc := range []struct {
		name string
		opts RedisOptions
	}{
		{"unloaded-plain-1bucket", RedisOptions{MaxBatch: 1}},
		{"unloaded-coalesced-1bucket", RedisOptions{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := NewRedis(c, tc.opts)
			charges := benchCharges(1)
			i := 0
			benchSequential(b, func() error {
				i++
				_, err := s.Take(ctx, charges[i%benchUsers])
				return err
			})
		})
	}
}

// BenchmarkRedisFlood is 64 goroutines hammering one shared bucket of 100
// tokens per second, through the denial cache and the coalesced store: nearly
// every request is over the limit. It reports requests per script call Redis
// ran (INFO commandstats) next to the decisions/s.
func BenchmarkRedisFlood(b *testing.B) {
	const goroutines = 64
	c := redis.NewClient(&redis.Options{Addr: redistest.Start(b), PoolSize: goroutines, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		store func() Store
	}{
		{"plain", func() Store { return NewRedis(c, RedisOptions{MaxBatch: 1}) }},
		{"coalesced+denialcache", func() Store {
			return NewDenialCache(NewRedis(c, RedisOptions{}), DenialCacheOptions{})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := tc.store()
			ch := []Charge{{Key: unsalted.Key("flood-"+tc.name, ScopeShared, "", ""), Limit: lim(100, time.Second), Cost: 1}}
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			var requests, allowed atomic.Int64
			benchParallel(b, goroutines, true, func() error {
				res, err := s.Take(ctx, ch)
				requests.Add(1)
				if res.Allowed {
					allowed.Add(1)
				}
				return err
			})
			calls := scriptCalls(b, c)
			if calls > 0 {
				b.ReportMetric(float64(requests.Load())/float64(calls), "requests/redis-call")
			}
			b.ReportMetric(float64(allowed.Load())/float64(max(requests.Load(), 1)), "allowed-fraction")
		})
	}
}

// scriptCalls returns how many scripts Redis ran since CONFIG RESETSTAT.
func scriptCalls(tb testing.TB, c *redis.Client) int64 {
	tb.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatalf("INFO commandstats: %v", err)
	}
	var n int64
	for _, m := range scriptStat.FindAllStringSubmatch(info, -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n
}

var scriptStat = regexp.MustCompile(`cmdstat_(?:evalsha|eval):calls=(\d+)`)
