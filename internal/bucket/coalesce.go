package bucket

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Defaults for coalescing; see RedisOptions.
const (
	// DefaultMaxBatch bounds the script calls of one pipeline. A gcra.lua call
	// costs Redis 8-13µs (INFO commandstats on the 2-core CI machine; most of it
	// the script's TIME, GET and SET calls), so a full batch holds Redis for 1-2ms: long
	// enough to amortise a round trip, short enough that one batch never eats a
	// noticeable part of a 50ms decision deadline.
	DefaultMaxBatch = 128
	// DefaultMaxInFlight bounds the pipelines in flight at once. With one, Redis
	// idles while a batch's replies travel back and the next batch is written;
	// with two the next batch is already on its way. BenchmarkRedis measured 49k,
	// 59k and 57k decisions/s with 1, 2 and 4 on 2 cores (see its comment): two
	// keeps Redis busy without holding more pool connections.
	DefaultMaxInFlight = 2
)

// pipeliner is what coalescing needs beyond redis.Scripter: every go-redis
// client (Client, ClusterClient, Ring, the failover client) has it. A
// ClusterClient's pipeline routes each EVALSHA to its key's slot by itself.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// coalescer sends the script calls of concurrent Takes together: a Take that
// arrives while maxInFlight pipelines are in flight waits in a queue, and the
// queue goes out as the next pipeline, each call still its own EVALSHA with its
// own reply. A Take that finds a free slot sends at once, with whatever is
// queued, so an idle store adds no wait: no timer, no linger.
//
// There is no background goroutine (no constructor side effect, nothing to
// stop): callers take turns as the leader. A caller that finds a free slot
// leads: it sends a batch from its own goroutine and delivers the replies. When
// it is done it hands its slot to the oldest queued caller that holds none,
// which wakes and leads the next batch; with nothing queued the slot is freed.
//
// Deadlines: a waiting caller returns ctx.Err() as soon as its context ends. If
// its call was still queued it is removed and never sent, so a request whose
// caller gave up is never charged. If it was already sent its charge stands:
// the caller fails open or closed as it would on any timeout, so a timed-out
// request is charged at most once more than it was let through. A batch is
// bounded by its leader's deadline: the leader cannot leave the batch it is
// sending, while every other caller leaves on its own deadline. (Bounding it by
// the earliest deadline of its calls instead would let one nearly expired call
// time out a whole batch that Redis has already run.)
type coalescer struct {
	client      redis.Scripter
	pipe        pipeliner
	script      *redis.Script
	maxBatch    int
	maxInFlight int

	mu       sync.Mutex
	queue    []*call // calls not yet sent, oldest first
	inFlight int     // slots held: batches being sent plus slots handed over
}

// call is one Take's script call.
type call struct {
	ctx  context.Context
	keys []string
	args []any

	// reply and err are set before done is closed.
	reply any
	err   error
	done  chan struct{}
	// wake receives when a finished leader hands this caller its slot.
	wake chan struct{}

	// Guarded by coalescer.mu.
	queued   bool // in coalescer.queue
	promoted bool // holds a slot handed over and has not yet taken it up
}

func newCoalescer(client redis.Scripter, pipe pipeliner, script *redis.Script, maxBatch, maxInFlight int) *coalescer {
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	return &coalescer{client: client, pipe: pipe, script: script, maxBatch: maxBatch, maxInFlight: maxInFlight}
}

// run returns the script's reply for keys and args, sent alone or with other
// callers' calls.
func (co *coalescer) run(ctx context.Context, keys []string, args []any) (any, error) {
	co.mu.Lock()
	if co.inFlight < co.maxInFlight && len(co.queue) == 0 {
		// An idle store: send at once, exactly as without coalescing.
		co.inFlight++
		co.mu.Unlock()
		reply, err := co.script.Run(ctx, co.client, keys, args...).Result()
		co.mu.Lock()
		co.releaseLocked()
		co.mu.Unlock()
		return reply, err
	}
	c := &call{ctx: ctx, keys: keys, args: args}
	if co.inFlight < co.maxInFlight {
		// A free slot: the store is not saturated, so send now. Anything queued
		// (callers handed a slot that have not woken yet) goes along.
		co.inFlight++
		batch := co.batchLocked(c)
		co.mu.Unlock()
		co.lead(ctx, batch)
		if len(batch) == 0 || batch[0] != c {
			// c's context ended before it could be sent.
			return nil, ctx.Err()
		}
		return c.reply, c.err
	}
	c.done, c.wake = make(chan struct{}), make(chan struct{}, 1)
	c.queued = true
	co.queue = append(co.queue, c)
	co.mu.Unlock()

	for {
		select {
		case <-c.done:
			co.mu.Lock()
			if c.promoted {
				// Handed a slot, but another leader sent c first: pass it on.
				c.promoted = false
				co.releaseLocked()
			}
			co.mu.Unlock()
			return c.reply, c.err
		case <-c.wake:
			if ctx.Err() != nil {
				return nil, co.abandon(c)
			}
			co.mu.Lock()
			c.promoted = false
			batch := co.batchLocked(nil)
			co.mu.Unlock()
			// c is usually in batch (it was the oldest waiting caller), but
			// another leader may have sent it already; either way its reply
			// arrives on done, and c leads under its own deadline.
			co.lead(ctx, batch)
		case <-ctx.Done():
			return nil, co.abandon(c)
		}
	}
}

// abandon is a waiting caller giving up: it leaves the queue if it is still
// there, and passes on a slot it was handed. It returns ctx.Err().
func (co *coalescer) abandon(c *call) error {
	co.mu.Lock()
	defer co.mu.Unlock()
	if c.queued {
		c.queued = false
		if i := slices.Index(co.queue, c); i >= 0 {
			co.queue = slices.Delete(co.queue, i, i+1)
		}
	}
	if c.promoted {
		c.promoted = false
		co.releaseLocked()
	}
	return c.ctx.Err()
}

// batchLocked takes the next batch: first (when not nil), then the oldest
// queued calls, up to maxBatch. Calls whose context has ended are dropped
// unsent and told so.
func (co *coalescer) batchLocked(first *call) []*call {
	n := min(len(co.queue), co.maxBatch)
	batch := make([]*call, 0, n+1)
	if first != nil && first.ctx.Err() == nil {
		batch = append(batch, first)
	}
	taken := 0
	for _, c := range co.queue {
		if len(batch) == co.maxBatch {
			break
		}
		taken++
		c.queued = false
		if err := c.ctx.Err(); err != nil {
			c.err = err
			close(c.done)
			continue
		}
		batch = append(batch, c)
	}
	rest := copy(co.queue, co.queue[taken:])
	clear(co.queue[rest:])
	co.queue = co.queue[:rest]
	return batch
}

// releaseLocked gives up a slot: to the oldest queued caller not already
// handed one, or back to the pool when there is none.
func (co *coalescer) releaseLocked() {
	for _, c := range co.queue {
		if !c.promoted {
			c.promoted = true
			c.wake <- struct{}{} // buffered, and empty: c held no slot
			return
		}
	}
	co.inFlight--
}

// lead sends batch while holding a slot, under the leader's context ctx, hands
// the slot on, and delivers every reply.
func (co *coalescer) lead(ctx context.Context, batch []*call) {
	if len(batch) > 0 {
		co.send(ctx, batch)
	}
	co.mu.Lock()
	co.releaseLocked()
	co.mu.Unlock()
	for _, c := range batch {
		if c.done != nil {
			close(c.done)
		}
	}
}

// send runs every call of batch, setting its reply and error.
func (co *coalescer) send(leader context.Context, batch []*call) {
	ctx, cancel := batchContext(leader, batch)
	defer cancel()
	if len(batch) == 1 {
		// Nothing to coalesce: exactly the uncoalesced path, EVALSHA and EVAL on
		// NOSCRIPT, without a pipeline's allocations.
		c := batch[0]
		c.reply, c.err = co.script.Run(ctx, co.client, c.keys, c.args...).Result()
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	pipe := co.pipe.Pipeline()
	sha := co.script.Hash()
	for i, c := range batch {
		cmds[i] = pipe.EvalSha(ctx, sha, c.keys, c.args...)
	}
	// Exec's error is the first command's; each command carries its own.
	_, _ = pipe.Exec(ctx)
	var retry []int
	for i, cmd := range cmds {
		reply, err := cmd.Result()
		if isNoScript(err) {
			retry = append(retry, i)
			continue
		}
		batch[i].reply, batch[i].err = reply, err
	}
	if len(retry) == 0 {
		return
	}
	// Redis lost its script cache (restart, failover, SCRIPT FLUSH). A NOSCRIPT
	// call did not run, so sending it again cannot charge twice. EVAL caches the
	// script on whichever node runs it, as Script.Run does for a single call.
	pipe = co.pipe.Pipeline()
	for j, i := range retry {
		cmds[j] = co.script.Eval(ctx, pipe, batch[i].keys, batch[i].args...)
	}
	_, _ = pipe.Exec(ctx)
	for j, i := range retry {
		batch[i].reply, batch[i].err = cmds[j].Result()
	}
}

// batchContext bounds a batch by the leader's deadline (see coalescer) and keeps
// the first call's values (tracing) but no caller's cancellation: one caller
// giving up must not fail the others' calls.
func batchContext(leader context.Context, batch []*call) (context.Context, context.CancelFunc) {
	if len(batch) == 1 && batch[0].ctx == leader {
		// The leader is the batch: its own context is the right one.
		return leader, func() {}
	}
	ctx := context.WithoutCancel(batch[0].ctx)
	if d, ok := leader.Deadline(); ok {
		return context.WithDeadline(ctx, d)
	}
	return ctx, func() {}
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}
