package bucket

import (
	"fmt"
	"time"
)

// MaxRefillPeriod is the longest RefillPeriod a store accepts. The Redis script
// does its arithmetic in Lua 5.1 numbers (doubles), exact only below 2^53: the
// current time in microseconds (~1.8e15) plus a window of ten years (~3.2e14)
// stays well inside that.
const MaxRefillPeriod = 10 * 365 * 24 * time.Hour

// shape is a Limit in GCRA units.
type shape struct {
	// interval is the emission interval T in microseconds: the time one token takes
	// to come back, ceil(RefillPeriod / MaxTokens). Rounding up means refill is at
	// most 1µs per token slower than exact and never faster, so a bucket never
	// admits more than maxTokens + rate×elapsed.
	interval int64
	// window is the burst window W = T × MaxTokens in microseconds. It is used as
	// the tolerance instead of RefillPeriod so that rounding T up never shrinks the
	// burst below MaxTokens.
	window int64
	// increment is Cost × T: how far one charge moves the bucket's TAT.
	increment int64
}

// shapeOf validates c and converts it to GCRA units. Errors wrap ErrInvalidCharge.
func shapeOf(c Charge) (shape, error) {
	l := c.Limit
	switch {
	case c.Key == "":
		return shape{}, fmt.Errorf("%w: empty key", ErrInvalidCharge)
	case l.MaxTokens < 1:
		return shape{}, fmt.Errorf("%w: %s: maxTokens %d < 1", ErrInvalidCharge, c.Key, l.MaxTokens)
	case l.RefillPeriod <= 0:
		return shape{}, fmt.Errorf("%w: %s: refillPeriod %v <= 0", ErrInvalidCharge, c.Key, l.RefillPeriod)
	case l.RefillPeriod > MaxRefillPeriod:
		return shape{}, fmt.Errorf("%w: %s: refillPeriod %v above the maximum %v", ErrInvalidCharge, c.Key, l.RefillPeriod, MaxRefillPeriod)
	case c.Cost < 1:
		return shape{}, fmt.Errorf("%w: %s: cost %d < 1", ErrInvalidCharge, c.Key, c.Cost)
	case c.Cost > l.MaxTokens:
		return shape{}, fmt.Errorf("%w: %s: cost %d above maxTokens %d", ErrInvalidCharge, c.Key, c.Cost, l.MaxTokens)
	}
	// RefillPeriod/MaxTokens >= 1µs  ⇔  periodNs >= 1000×MaxTokens  ⇔
	// floor(periodNs/1000) >= MaxTokens, written so that nothing overflows.
	periodNs := int64(l.RefillPeriod)
	if periodNs/1000 < l.MaxTokens {
		return shape{}, fmt.Errorf("%w: %s: refillPeriod %v / maxTokens %d is below 1µs per token", ErrInvalidCharge, c.Key, l.RefillPeriod, l.MaxTokens)
	}
	perToken := 1000 * l.MaxTokens // ≤ periodNs, so no overflow
	t := (periodNs + perToken - 1) / perToken
	return shape{interval: t, window: t * l.MaxTokens, increment: t * c.Cost}, nil
}

// decision is the GCRA outcome for one bucket, all times in microseconds.
type decision struct {
	denied bool
	// tat is the bucket's TAT before the charge, never before now.
	tat int64
	// newTAT is the TAT to store if every bucket of the Take allows.
	newTAT int64
	// retryAfter is how long until the bucket holds its cost; 0 when it does.
	retryAfter int64
}

// decide runs GCRA for one bucket. stored is the bucket's TAT, or 0 when absent.
// Both stores (this function and gcra.lua) must implement exactly this.
func decide(s shape, stored, now int64) decision {
	tat := max(stored, now)
	// A TAT beyond now+W cannot arise with a steady clock and limit: it means the
	// clock stepped back or the limit shrank. Treat the bucket as empty rather than
	// owing tokens for longer than the current limit allows.
	tat = min(tat, now+s.window)
	newTAT := tat + s.increment
	d := decision{tat: tat, newTAT: newTAT}
	if allowAt := newTAT - s.window; allowAt > now {
		d.denied, d.retryAfter = true, allowAt-now
	}
	return d
}

// state is the bucket's state after the Take: charged when the whole Take was
// allowed, untouched otherwise.
func (d decision) state(s shape, now int64, allowed bool) BucketState {
	if allowed {
		return BucketState{Remaining: s.remaining(d.newTAT - now)}
	}
	return BucketState{Denied: d.denied, Remaining: s.remaining(d.tat - now), RetryAfter: time.Duration(d.retryAfter) * time.Microsecond}
}

// remaining is the whole number of tokens a bucket holds when used µs of its
// window are taken.
func (s shape) remaining(used int64) int64 {
	return max((s.window-used)/s.interval, 0)
}

// duplicateKey reports the first key repeated in charges. Takes carry a
// handful of charges, for which comparing every pair beats building a map.
func duplicateKey(charges []Charge) (string, bool) {
	if len(charges) > 16 {
		seen := make(map[string]struct{}, len(charges))
		for _, c := range charges {
			if _, ok := seen[c.Key]; ok {
				return c.Key, true
			}
			seen[c.Key] = struct{}{}
		}
		return "", false
	}
	for i := 1; i < len(charges); i++ {
		for j := range i {
			if charges[i].Key == charges[j].Key {
				return charges[i].Key, true
			}
		}
	}
	return "", false
}

// errDuplicate is the error for a key repeated within one Take.
func errDuplicate(key string) error {
	return fmt.Errorf("%w: key %s repeated in one take", ErrInvalidCharge, key)
}
