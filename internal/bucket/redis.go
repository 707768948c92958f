package bucket

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraSource is the script that decides one Take; see its header for the protocol.
//
//go:embed gcra.lua
var gcraSource string

// RedisOptions configures a Redis store. The zero value is ready to use.
type RedisOptions struct {
	// Timeout bounds each Take in addition to ctx's own deadline; 0 means ctx
	// alone bounds it.
	Timeout time.Duration
	// MaxBatch bounds how many Takes share one pipeline when Takes arrive
	// faster than Redis answers (see coalescer); 0 means DefaultMaxBatch, and 1
	// sends every Take on its own round trip. A client without pipelines (only
	// redis.Scripter) never coalesces.
	MaxBatch int
	// MaxInFlight bounds the pipelines in flight at once; 0 means
	// DefaultMaxInFlight. It should not exceed the client's pool size.
	MaxInFlight int
}

// Redis is a Store whose buckets live in Redis, shared by every replica. A Take is
// one script (EVALSHA, EVAL when Redis lost its script cache) that reads every
// bucket, decides, and writes all or none, with Redis TIME as the clock; so a Take
// that fails, times out or is cancelled has charged either everything or nothing,
// never a part. All keys of one request share the {server} hash tag and therefore
// one Redis Cluster slot.
//
// Concurrent Takes share round trips: those that arrive while Redis is busy go
// out together in the next pipeline, each still its own script call (see
// coalescer); a Take on an idle store is sent at once.
type Redis struct {
	client  redis.Scripter
	script  *redis.Script
	timeout time.Duration
	// co is nil when every Take has its own round trip.
	co *coalescer
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store over client: a *redis.Client, *redis.ClusterClient, a
// failover client or anything else that runs scripts. It does not contact Redis
// and starts no goroutine.
func NewRedis(client redis.Scripter, opts RedisOptions) *Redis {
	r := &Redis{client: client, script: redis.NewScript(gcraSource), timeout: opts.Timeout}
	if p, ok := client.(pipeliner); ok && opts.MaxBatch != 1 {
		r.co = newCoalescer(client, p, r.script, opts.MaxBatch, opts.MaxInFlight)
	}
	return r
}

// Take charges every charge or none. An error means no decision: Redis unreachable,
// a deadline exceeded, a malformed reply, or an invalid charge (ErrInvalidCharge).
func (r *Redis) Take(ctx context.Context, charges []Charge) (Result, error) {
	n := len(charges)
	if n == 0 {
		return Result{Allowed: true}, nil
	}
	var shapesBuf [smallTake]shape
	shapes := shapesBuf[:0]
	if n > smallTake {
		shapes = make([]shape, 0, n)
	}
	keys := make([]string, n)
	args := make([]any, 0, 2*n)
	for i, c := range charges {
		s, err := shapeOf(c)
		if err != nil {
			return Result{}, err
		}
		shapes = append(shapes, s)
		keys[i] = c.Key
		args = append(args, s.increment, s.window)
	}
	if key, dup := duplicateKey(charges); dup {
		return Result{}, errDuplicate(key)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bucket: redis take: %w", err)
	}
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	var reply any
	var err error
	if r.co != nil {
		reply, err = r.co.run(ctx, keys, args)
	} else {
		reply, err = r.script.Run(ctx, r.client, keys, args...).Result()
	}
	if err != nil {
		return Result{}, fmt.Errorf("bucket: redis take: %w", err)
	}
	return parseReply(reply, shapes)
}

// errMalformedReply: the script answered something it never sends, e.g. another
// script under the same SHA or a proxy mangling replies.
var errMalformedReply = errors.New("bucket: malformed reply from gcra.lua")

// parseReply reads the script's reply (see gcra.lua) for the buckets of shapes,
// checking every type: a malformed reply is an error, never a guess.
func parseReply(reply any, shapes []shape) (Result, error) {
	vals, ok := reply.([]any)
	if !ok {
		return Result{}, fmt.Errorf("%w: got %T, want an array", errMalformedReply, reply)
	}
	if want := 1 + 3*len(shapes); len(vals) != want {
		return Result{}, fmt.Errorf("%w: got %d values, want %d", errMalformedReply, len(vals), want)
	}
	intAt := func(i int) (int64, error) {
		x, ok := vals[i].(int64)
		if !ok {
			return 0, fmt.Errorf("%w: value %d is %T, want an integer", errMalformedReply, i+1, vals[i])
		}
		return x, nil
	}
	v, err := intAt(0)
	if err != nil {
		return Result{}, err
	}
	allowed, err := flag(v)
	if err != nil {
		return Result{}, err
	}
	res := Result{Allowed: allowed, Buckets: make([]BucketState, len(shapes))}
	for i, s := range shapes {
		d, err := intAt(3*i + 1)
		if err != nil {
			return Result{}, err
		}
		denied, err := flag(d)
		if err != nil {
			return Result{}, err
		}
		used, err := intAt(3*i + 2)
		if err != nil {
			return Result{}, err
		}
		retry, err := intAt(3*i + 3)
		if err != nil {
			return Result{}, err
		}
		if used < 0 || used > s.window || retry < 0 || retry > s.window || denied != (retry > 0) || (denied && allowed) {
			return Result{}, fmt.Errorf("%w: bucket %d: denied=%v used=%dµs retry=%dµs with window %dµs",
				errMalformedReply, i+1, denied, used, retry, s.window)
		}
		rd := time.Duration(retry) * time.Microsecond
		res.Buckets[i] = BucketState{Denied: denied, Remaining: s.remaining(used), RetryAfter: rd}
		res.RetryAfter = max(res.RetryAfter, rd)
	}
	if !allowed && res.RetryAfter == 0 {
		return Result{}, fmt.Errorf("%w: denied without a denying bucket", errMalformedReply)
	}
	return res, nil
}

func flag(v int64) (bool, error) {
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("%w: got flag %d, want 0 or 1", errMalformedReply, v)
}
