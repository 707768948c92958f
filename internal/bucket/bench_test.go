package bucket

import (
	"context"
	"runtime"
	"strconv"
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
			{Key: Key("bench", ScopeUser, "", id), Limit: big, Cost: 1},
			{Key: Key("bench", ScopeShared, "", ""), Limit: big, Cost: 1},
			{Key: Key("bench", ScopeTool, "search", ""), Limit: big, Cost: 1},
			{Key: Key("bench", ScopeUserTool, "search", id), Limit: big, Cost: 1},
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

func benchTake(b *testing.B, s Store, buckets, goroutines int) {
	charges := benchCharges(buckets)
	var next atomic.Int64
	var denied atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism(goroutines))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := s.Take(ctx, charges[next.Add(1)%benchUsers])
			if err != nil {
				b.Error(err)
				return
			}
			if !res.Allowed {
				denied.Add(1)
			}
		}
	})
	if n := denied.Load(); n > 0 {
		b.Logf("%d denials: the limits are too small for this run", n)
	}
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

// BenchmarkRedis compares the store's Take with a bare EVALSHA of "return 1",
// both from 64 goroutines over one pool of 64 connections to a local
// redis-server: the ratio of their ns/op is the cost of a decision over the
// cheapest possible round trip.
func BenchmarkRedis(b *testing.B) {
	const goroutines = 64
	c := redis.NewClient(&redis.Options{Addr: redistest.Start(b), PoolSize: goroutines, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })

	b.Run("baseline-evalsha-return-1", func(b *testing.B) {
		script := redis.NewScript("return 1")
		ctx := context.Background()
		if err := script.Load(ctx, c).Err(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetParallelism(parallelism(goroutines))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := script.EvalSha(ctx, c, nil).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	for _, buckets := range []int{1, 4} {
		b.Run("take-"+strconv.Itoa(buckets)+"buckets", func(b *testing.B) {
			benchTake(b, NewRedis(c, RedisOptions{}), buckets, goroutines)
		})
	}
}
