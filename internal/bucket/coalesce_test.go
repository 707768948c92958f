package bucket

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

func TestRedisConformanceEachTakeAlone(t *testing.T) {
	c := newTestClient(t, redistest.Start(t))
	runConformance(t, func(t *testing.T) harness {
		h := redisHarness(c)
		h.store = NewRedis(c, RedisOptions{MaxBatch: 1})
		return h
	})
}

func TestRedisConformanceSmallBatchesOneInFlight(t *testing.T) {
	// Small batches and one pipeline at a time: queues and hand-overs on every
	// concurrent row.
	c := newTestClient(t, redistest.Start(t))
	runConformance(t, func(t *testing.T) harness {
		h := redisHarness(c)
		h.store = NewRedis(c, RedisOptions{MaxBatch: 4, MaxInFlight: 1})
		return h
	})
}

// gate is a go-redis hook that records every script call sent and can hold
// each send (one command or one pipeline) until the test lets it go.
type gate struct {
	// entered receives the keys of each send's script calls as it starts.
	entered chan []string
	// release lets one held send go on.
	release chan struct{}

	mu   sync.Mutex
	hold bool
	sent [][]string
}

func newGate() *gate {
	return &gate{entered: make(chan []string, 64), release: make(chan struct{})}
}

func (g *gate) setHold(hold bool) {
	g.mu.Lock()
	g.hold = hold
	g.mu.Unlock()
}

// sends returns the keys of the script calls of every send so far.
func (g *gate) sends() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sent)
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		g.pass([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.pass(cmds)
		return next(ctx, cmds)
	}
}

func (g *gate) pass(cmds []redis.Cmder) {
	var keys []string
	for _, c := range cmds {
		if name := c.Name(); name != "evalsha" && name != "eval" {
			continue
		}
		// EVALSHA sha numkeys key... arg...
		args := c.Args()
		n, _ := args[2].(int)
		for _, k := range args[3 : 3+n] {
			keys = append(keys, fmt.Sprint(k))
		}
	}
	if keys == nil {
		return
	}
	g.mu.Lock()
	g.sent = append(g.sent, keys)
	hold := g.hold
	g.mu.Unlock()
	g.entered <- keys
	if hold {
		<-g.release
	}
}

// gatedStore is a store over a fresh redis-server whose client passes g.
func gatedStore(t *testing.T, opts RedisOptions) (*Redis, *gate, *redis.Client) {
	t.Helper()
	addr := redistest.Start(t)
	g := newGate()
	hooked := newTestClient(t, addr)
	hooked.AddHook(g)
	plain := newTestClient(t, addr)
	// Loaded, so that the first EVALSHA is not answered NOSCRIPT and resent.
	if err := redis.NewScript(gcraSource).Load(context.Background(), plain).Err(); err != nil {
		t.Fatalf("SCRIPT LOAD: %v", err)
	}
	return NewRedis(hooked, opts), g, plain
}

func (co *coalescer) queueLen() int {
	co.mu.Lock()
	defer co.mu.Unlock()
	return len(co.queue)
}

// waitQueued polls until n calls are queued: a readiness check, not a sleep.
func waitQueued(t *testing.T, s *Redis, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.co.queueLen() != n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d calls queued, want %d", s.co.queueLen(), n)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

type outcome struct {
	res Result
	err error
}

func goTake(ctx context.Context, s Store, c Charge) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := s.Take(ctx, []Charge{c})
		ch <- outcome{res, err}
	}()
	return ch
}

// await fails the test when a caller does not return while the test holds
// every other send: a bound on a hang, not a measurement.
func await(t *testing.T, what string, ch <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: got no return, want one while the pipeline is held", what)
		return outcome{}
	}
}

func charge(name string) Charge {
	return Charge{Key: unsalted.Key("coalesce", ScopeUser, "", name), Limit: lim(10, hour), Cost: 1}
}

func TestCoalescerNeverSendsACallCancelledWhileQueued(t *testing.T) {
	s, g, plain := gatedStore(t, RedisOptions{MaxInFlight: 1})
	g.setHold(true)
	a, b := charge("a"), charge("b")
	first := goTake(context.Background(), s, a)
	<-g.entered // a is in flight and held

	ctx, cancel := context.WithCancel(context.Background())
	queued := goTake(ctx, s, b)
	waitQueued(t, s, 1)
	cancel()
	if o := await(t, "cancelled caller", queued); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled caller: got %+v, %v, want context.Canceled", o.res, o.err)
	}
	if n := s.co.queueLen(); n != 0 {
		t.Errorf("queue after the cancel: got %d calls, want 0", n)
	}

	g.setHold(false)
	g.release <- struct{}{}
	if o := await(t, "first caller", first); o.err != nil || !o.res.Allowed {
		t.Fatalf("first caller: got %+v, %v, want allowed", o.res, o.err)
	}
	// One more Take, so that anything wrongly left queued would have gone out.
	wantAllowed(t, take(t, s, charge("c")), 9)
	if got, want := g.sends(), [][]string{{a.Key}, {unsalted.Key("coalesce", ScopeUser, "", "c")}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("sent: got %v, want %v", got, want)
	}
	wantAbsent(t, redisHarness(plain), b.Key)
}

func TestCoalescerCallCancelledAfterSendingKeepsItsCharge(t *testing.T) {
	s, g, plain := gatedStore(t, RedisOptions{MaxInFlight: 1})
	g.setHold(true)
	a, b, c := charge("a"), charge("b"), charge("c")
	first := goTake(context.Background(), s, a)
	<-g.entered
	leader := goTake(context.Background(), s, b)
	waitQueued(t, s, 1)
	ctx, cancel := context.WithCancel(context.Background())
	follower := goTake(ctx, s, c)
	waitQueued(t, s, 2)

	g.release <- struct{}{} // a's round trip ends; b leads [b c]
	await(t, "first caller", first)
	if got, want := <-g.entered, []string{b.Key, c.Key}; !slices.Equal(got, want) {
		t.Fatalf("second send: got keys %v, want %v", got, want)
	}
	cancel()
	if o := await(t, "cancelled follower", follower); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled follower: got %+v, %v, want context.Canceled", o.res, o.err)
	}
	g.setHold(false)
	g.release <- struct{}{}
	if o := await(t, "leader", leader); o.err != nil || !o.res.Allowed {
		t.Fatalf("leader: got %+v, %v, want allowed", o.res, o.err)
	}
	// The follower's call had gone out: Redis charged it.
	wantStored(t, redisHarness(plain), c.Key)
}

func TestCoalescerSendsOldestFirstInBoundedBatches(t *testing.T) {
	s, g, _ := gatedStore(t, RedisOptions{MaxBatch: 3, MaxInFlight: 1})
	g.setHold(true)
	first := goTake(context.Background(), s, charge("first"))
	<-g.entered
	var keys []string
	var waiting []<-chan outcome
	for i := range 7 {
		c := charge("q" + fmt.Sprint(i))
		keys = append(keys, c.Key)
		waiting = append(waiting, goTake(context.Background(), s, c))
		waitQueued(t, s, i+1)
	}
	g.setHold(false)
	g.release <- struct{}{}
	await(t, "first caller", first)
	for i, ch := range waiting {
		if o := await(t, keys[i], ch); o.err != nil || !o.res.Allowed {
			t.Errorf("%s: got %+v, %v, want allowed", keys[i], o.res, o.err)
		}
	}
	want := [][]string{{charge("first").Key}, keys[0:3], keys[3:6], keys[6:7]}
	if got := g.sends(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("sends: got %v, want %v", got, want)
	}
}

func TestCoalescerReloadsTheScriptForAPipeline(t *testing.T) {
	s, g, plain := gatedStore(t, RedisOptions{MaxInFlight: 1})
	g.setHold(true)
	first := goTake(context.Background(), s, charge("first"))
	<-g.entered
	var waiting []<-chan outcome
	for i := range 5 {
		waiting = append(waiting, goTake(context.Background(), s, charge("q"+fmt.Sprint(i))))
		waitQueued(t, s, i+1)
	}
	// The queued batch will meet NOSCRIPT and must fall back to EVAL.
	if err := plain.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	g.setHold(false)
	g.release <- struct{}{}
	await(t, "first caller", first)
	for i, ch := range waiting {
		if o := await(t, fmt.Sprint("caller ", i), ch); o.err != nil || !o.res.Allowed || o.res.Buckets[0].Remaining != 9 {
			t.Errorf("caller %d: got %+v, %v, want allowed with 9 remaining", i, o.res, o.err)
		}
	}
	// first, the pipeline of EVALSHAs answered NOSCRIPT, then the EVALs.
	if got := len(g.sends()); got != 3 {
		t.Errorf("sends: got %d, want 3", got)
	}
}

func TestCoalescerDeadlineBoundsQueuedAndSentCalls(t *testing.T) {
	c := newTestClient(t, silentServer(t))
	s := NewRedis(c, RedisOptions{MaxInFlight: 1, Timeout: 50 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			_, err := s.Take(context.Background(), []Charge{charge(fmt.Sprint(i))})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !isTimeout(err) {
			t.Errorf("got error %v, want a timeout", err)
		}
	}
	if n := s.co.queueLen(); n != 0 {
		t.Errorf("queue after every deadline: got %d calls, want 0", n)
	}
}

func TestCoalescerShortDeadlineDoesNotFailItsBatch(t *testing.T) {
	s, g, _ := gatedStore(t, RedisOptions{MaxInFlight: 1})
	g.setHold(true)
	a, b, c, d := charge("a"), charge("b"), charge("c"), charge("d")
	first := goTake(context.Background(), s, a)
	<-g.entered
	leader := goTake(context.Background(), s, b)
	waitQueued(t, s, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	short := goTake(ctx, s, c)
	waitQueued(t, s, 2)
	late := goTake(context.Background(), s, d)
	waitQueued(t, s, 3)

	g.release <- struct{}{} // a's round trip ends; b leads [b c d]
	await(t, "first caller", first)
	if got, want := <-g.entered, []string{b.Key, c.Key, d.Key}; !slices.Equal(got, want) {
		t.Fatalf("second send: got keys %v, want %v", got, want)
	}
	// The batch is held past c's deadline: c gives up on its own...
	if o := await(t, "short-deadline caller", short); !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("short-deadline caller: got %+v, %v, want context.DeadlineExceeded", o.res, o.err)
	}
	// ...and the others, whose deadlines are far, still get their decisions.
	g.setHold(false)
	g.release <- struct{}{}
	for name, ch := range map[string]<-chan outcome{"leader": leader, "late caller": late} {
		if o := await(t, name, ch); o.err != nil || !o.res.Allowed {
			t.Errorf("%s: got %+v, %v, want allowed", name, o.res, o.err)
		}
	}
}
