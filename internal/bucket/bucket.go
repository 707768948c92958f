// Package bucket implements token buckets in their GCRA form, charged several at
// a time and all-or-nothing, in Redis and in memory.
package bucket

import (
	"context"
	"errors"
	"time"
)

// Limit is a bucket's shape: MaxTokens is both the capacity and the burst; the
// bucket refills from empty to full in RefillPeriod.
type Limit struct {
	MaxTokens    int64
	RefillPeriod time.Duration
}

// Charge asks one bucket for Cost tokens.
type Charge struct {
	Key   string // built by Key; unique within one Take
	Limit Limit
	Cost  int64
}

// BucketState is one bucket's state after a Take.
type BucketState struct {
	// Denied is true when this bucket lacked Cost tokens.
	Denied bool
	// Remaining is the whole number of tokens the bucket holds after the decision
	// (after charging when the request was allowed).
	Remaining int64
	// RetryAfter is the time until this bucket holds its Cost; zero when it does now.
	RetryAfter time.Duration
}

// Result is the outcome of one Take.
type Result struct {
	// Allowed is true when every bucket held its cost and all were charged.
	Allowed bool
	// RetryAfter is zero when allowed; otherwise the time until every denying bucket
	// holds the cost it was asked for (the maximum of their RetryAfter).
	RetryAfter time.Duration
	// Buckets has one entry per charge, in the order given.
	Buckets []BucketState
}

// Errors returned by stores for requests that can never be served.
var (
	// ErrInvalidCharge: a charge with an empty key, a non-positive cost or limit,
	// a cost above MaxTokens, or a key repeated within one Take.
	ErrInvalidCharge = errors.New("bucket: invalid charge")
)

// Store charges every bucket of one request atomically.
type Store interface {
	// Take charges every charge or none. A nil error with Allowed false is a denial;
	// an error means no decision (store down, deadline exceeded, invalid charge).
	Take(ctx context.Context, charges []Charge) (Result, error)
}
