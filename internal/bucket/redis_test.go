package bucket

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

// newTestClient connects to a redis-server started for the test.
func newTestClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func redisHarness(c redis.UniversalClient) harness {
	return harness{store: NewRedis(c, RedisOptions{}), stored: func(t *testing.T, key string) (int64, time.Duration, bool) {
		t.Helper()
		// GET and PTTL in one MULTI: a 1ms bucket may expire between two calls.
		var get *redis.StringCmd
		var pttl *redis.DurationCmd
		if _, err := c.TxPipelined(context.Background(), func(p redis.Pipeliner) error {
			get, pttl = p.Get(context.Background(), key), p.PTTL(context.Background(), key)
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("GET+PTTL %s: %v", key, err)
		}
		v, err := get.Result()
		if errors.Is(err, redis.Nil) {
			return 0, 0, false
		}
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		tat, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("GET %s: got %q, want a decimal integer", key, v)
		}
		ttl, err := pttl.Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", key, err)
		}
		if ttl < 0 {
			t.Fatalf("PTTL %s: got %v, want an expiry", key, ttl)
		}
		return tat, ttl, true
	}}
}

func TestRedisConformance(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	runConformance(t, func(t *testing.T) harness { return redisHarness(c) })
}

func TestRedisStoresTATAsExactMicroseconds(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	h := redisHarness(c)
	ch := Charge{Key: unsalted.Key("exact", ScopeShared, "", ""), Limit: lim(3, 3*time.Second), Cost: 1}
	before := time.Now().UnixMicro()
	take(t, h.store, ch)
	after := time.Now().UnixMicro()
	// %.14g formatting would have rounded the TAT to 10ms or worse.
	tat, _ := wantStored(t, h, ch.Key)
	if lo, hi := before+1_000_000, after+1_000_000; tat < lo || tat > hi {
		t.Errorf("stored TAT: got %d, want within [%d, %d]", tat, lo, hi)
	}
}

func TestRedisKeepsDecidingAfterScriptFlush(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	s := NewRedis(c, RedisOptions{})
	ch := Charge{Key: unsalted.Key("flush", ScopeShared, "", ""), Limit: lim(3, hour), Cost: 1}
	wantAllowed(t, take(t, s, ch), 2)
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	// EVALSHA now answers NOSCRIPT; the store must fall back to EVAL.
	wantAllowed(t, take(t, s, ch), 1)
	wantAllowed(t, take(t, s, ch), 0)
}

func TestRedisDownIsAnError(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	defer c.Close()
	s := NewRedis(c, RedisOptions{})
	ch := Charge{Key: unsalted.Key("down", ScopeShared, "", ""), Limit: lim(3, hour), Cost: 1}
	res, err := s.Take(context.Background(), []Charge{ch})
	if err == nil || errors.Is(err, ErrInvalidCharge) {
		t.Fatalf("got result %+v error %v, want a store error", res, err)
	}
}

func TestRedisHonoursDeadlines(t *testing.T) {
	c := newTestClient(t, silentServer(t))
	ch := Charge{Key: unsalted.Key("deadline", ScopeShared, "", ""), Limit: lim(3, hour), Cost: 1}

	for _, tc := range []struct {
		name    string
		opts    RedisOptions
		timeout time.Duration // of the caller's context; 0 for none
	}{
		{"context deadline", RedisOptions{}, 50 * time.Millisecond},
		{"store timeout", RedisOptions{Timeout: 50 * time.Millisecond}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			res, err := NewRedis(c, tc.opts).Take(ctx, []Charge{ch})
			if !isTimeout(err) {
				t.Fatalf("got result %+v error %v, want a timeout", res, err)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func TestRedisRejectsCorruptBucket(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	key := unsalted.Key("corrupt", ScopeShared, "", "")
	if err := c.Set(context.Background(), key, "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := NewRedis(c, RedisOptions{}).Take(context.Background(), []Charge{{Key: key, Limit: lim(3, hour), Cost: 1}})
	if err == nil || !strings.Contains(err.Error(), "does not hold a number") {
		t.Fatalf("got error %v, want one saying the bucket does not hold a number", err)
	}
}

func TestRedisCapsTATFromTheFuture(t *testing.T) {
	// A TAT far beyond now+W (a shrunk limit, a clock stepped back) leaves the
	// bucket empty, not owing tokens for longer than the current limit allows.
	c := newTestClient(t, redistest.Start(t))
	h := redisHarness(c)
	ch := Charge{Key: unsalted.Key("future", ScopeShared, "", ""), Limit: lim(2, 2*time.Second), Cost: 1}
	future := time.Now().Add(100 * hour).UnixMicro()
	if err := c.Set(context.Background(), ch.Key, future, 0).Err(); err != nil {
		t.Fatal(err)
	}
	res := take(t, h.store, ch)
	wantDenied(t, res)
	wantWithin(t, "RetryAfter", res.RetryAfter, 0, time.Second)
}

func TestParseReplyRejectsMalformedReplies(t *testing.T) {
	shapes := []shape{{interval: 10, window: 100, increment: 10}}
	for _, tc := range []struct {
		name  string
		reply any
	}{
		{"not an array", int64(1)},
		{"nil", nil},
		{"too short", []any{int64(1), int64(0), int64(10)}},
		{"too long", []any{int64(1), int64(0), int64(10), int64(0), int64(0)}},
		{"string value", []any{int64(1), "0", int64(10), int64(0)}},
		{"flag not 0 or 1", []any{int64(2), int64(0), int64(10), int64(0)}},
		{"negative used", []any{int64(1), int64(0), int64(-1), int64(0)}},
		{"used beyond window", []any{int64(1), int64(0), int64(101), int64(0)}},
		{"denied without retry", []any{int64(0), int64(1), int64(100), int64(0)}},
		{"retry without denial", []any{int64(0), int64(0), int64(100), int64(5)}},
		{"allowed yet denied", []any{int64(1), int64(1), int64(100), int64(5)}},
		{"denied by no bucket", []any{int64(0), int64(0), int64(10), int64(0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res, err := parseReply(tc.reply, shapes); !errors.Is(err, errMalformedReply) {
				t.Fatalf("got result %+v error %v, want errMalformedReply", res, err)
			}
		})
	}
}

func TestParseReplyReadsDecisions(t *testing.T) {
	shapes := []shape{{interval: 10, window: 100, increment: 10}, {interval: 7, window: 70, increment: 14}}
	for _, tc := range []struct {
		name  string
		reply []any
		want  Result
	}{
		{"allowed", []any{int64(1), int64(0), int64(35), int64(0), int64(0), int64(14), int64(0)},
			Result{Allowed: true, Buckets: []BucketState{{Remaining: 6}, {Remaining: 8}}}},
		{"denied by the second", []any{int64(0), int64(0), int64(35), int64(0), int64(1), int64(70), int64(14)},
			Result{RetryAfter: 14 * time.Microsecond, Buckets: []BucketState{{Remaining: 6}, {Denied: true, RetryAfter: 14 * time.Microsecond}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseReply(tc.reply, shapes)
			if err != nil {
				t.Fatal(err)
			}
			if !resultsEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func resultsEqual(a, b Result) bool {
	if a.Allowed != b.Allowed || a.RetryAfter != b.RetryAfter || len(a.Buckets) != len(b.Buckets) {
		return false
	}
	for i := range a.Buckets {
		if a.Buckets[i] != b.Buckets[i] {
			return false
		}
	}
	return true
}

// silentServer returns the address of a server that accepts connections and never
// answers, like a Redis stuck on a slow command or behind a black-holing network.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 64)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			conns <- conn
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for conn := range conns {
			conn.Close()
		}
	})
	return l.Addr().String()
}

// Two windows of one slot, as the limiter charges them: the first keeps the
// single bucket's key, the second its own; both are charged in one script call,
// and a denial by the long window charges neither.
func TestRedisChargesTheWindowsOfASlotTogether(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	h := redisHarness(c)
	minute := Charge{Key: unsalted.WindowKey("win", ScopeUserTool, "search", "alice", 0), Limit: lim(3, time.Minute), Cost: 1}
	day := Charge{Key: unsalted.WindowKey("win", ScopeUserTool, "search", "alice", 1), Limit: lim(2, 24*hour), Cost: 1}
	if minute.Key != unsalted.Key("win", ScopeUserTool, "search", "alice") {
		t.Fatalf("window 0 key %q differs from the single bucket's", minute.Key)
	}
	wantAllowed(t, take(t, h.store, minute, day), 2, 1)
	wantAllowed(t, take(t, h.store, minute, day), 1, 0)
	start := time.Now()
	minuteTAT, _ := wantStored(t, h, minute.Key)
	_, dayTTL := wantStored(t, h, day.Key)
	res, elapsed := timedTake(t, h.store, start, minute, day)
	wantDenied(t, res)
	if res.Buckets[0].Denied || !res.Buckets[1].Denied {
		t.Errorf("got denied minute %v day %v, want only the day's", res.Buckets[0].Denied, res.Buckets[1].Denied)
	}
	// The day's bucket earns a token every 12h.
	wantWithin(t, "RetryAfter", res.RetryAfter, 12*hour-time.Second-elapsed, 12*hour)
	if tat, _ := wantStored(t, h, minute.Key); tat != minuteTAT {
		t.Errorf("minute bucket TAT moved from %d to %d on a denial", minuteTAT, tat)
	}
	if dayTTL < 23*hour {
		t.Errorf("day bucket expires in %v, want about 24h", dayTTL)
	}
}
