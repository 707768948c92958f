package config

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// limitBucket is a parsed bucket and where it was written, for messages that
// name it. MaxTokens is 0 when the bucket was invalid.
type limitBucket struct {
	b    Bucket
	path string
}

// slot is a bucket slot as parsed: nil when absent, and non-nil (possibly
// empty) when present, even if invalid, so that "limits nothing" is not
// reported on top of its own problems.
type slot []limitBucket

// buckets returns the slot's buckets for the policy; nil when absent.
func (s slot) buckets() []Bucket {
	if s == nil {
		return nil
	}
	out := make([]Bucket, len(s))
	for i, lb := range s {
		out[i] = lb.b
	}
	return out
}

// rateLimiting reads a rateLimiting block into s.
func (w *walker) rateLimiting(n *yaml.Node, path string, s *Server) {
	f, ok := w.fields(n, path, rlKeys, nil)
	if !ok {
		return
	}
	shared := w.optBuckets(f, "shared", path)
	perUser := w.optBuckets(f, "perUser", path)
	s.Shared, s.PerUser = shared.buckets(), perUser.buckets()
	anyBucket := shared != nil || perUser != nil

	type entry struct {
		node, costNode  *yaml.Node
		path            string
		cost            int64
		shared, perUser slot
	}
	readEntries := func(key, what string) []entry {
		x, ok := f[key]
		if !ok {
			return nil
		}
		listPath := join(path, key)
		items, _ := w.list(x.val, listPath)
		var out []entry
		firstByName := map[string]string{}
		for i, item := range items {
			p := index(listPath, i)
			ef, ok := w.fields(item, p, toolKeys, nil)
			if !ok {
				continue
			}
			e := entry{node: item, path: p, cost: 1}
			var name string
			if nf, ok := ef["name"]; ok {
				np := join(p, "name")
				name, ok = w.name(nf.val, np)
				if ok {
					if first, dup := firstByName[name]; dup {
						w.addf(nf.val, np, "duplicate %s %q (first at %s)", what, name, first)
					} else {
						firstByName[name] = p
					}
					if key == "methods" && name == "tools/call" {
						w.addf(nf.val, np, "tools/call is limited by %s.shared, %s.perUser and %s.tools, not methods", path, path, path)
					}
				}
			} else {
				w.missing(item, p, "name", "every %s needs a name", what)
			}
			if cf, ok := ef["cost"]; ok {
				e.costNode = cf.val
				if c, ok := w.integer(cf.val, join(p, "cost"), 1, MaxTokensLimit); ok {
					e.cost = c
				}
			}
			e.shared = w.optBuckets(ef, "shared", p)
			e.perUser = w.optBuckets(ef, "perUser", p)
			anyBucket = anyBucket || e.shared != nil || e.perUser != nil
			out = append(out, e)
			if key == "tools" {
				if s.Tools == nil {
					s.Tools = map[string]Tool{}
				}
				s.Tools[name] = Tool{Name: name, Cost: e.cost, Shared: e.shared.buckets(), PerUser: e.perUser.buckets()}
			} else {
				if s.Methods == nil {
					s.Methods = map[string]Method{}
				}
				s.Methods[name] = Method{Name: name, Cost: e.cost, Shared: e.shared.buckets(), PerUser: e.perUser.buckets()}
			}
		}
		return out
	}
	tools := readEntries("tools", "tool")
	methods := readEntries("methods", "method")

	if !anyBucket {
		w.addf(n, path, "limits nothing: set shared, perUser, or a tool or method with shared or perUser")
		return
	}
	// A cost above a bucket's capacity can never be paid: the call would be
	// rejected forever, which is a configuration error, not a limit.
	checkCost := func(e entry, what string, slots ...slot) {
		for _, s := range slots {
			for _, b := range s {
				if b.b.MaxTokens > 0 && e.cost > b.b.MaxTokens {
					w.addf(e.costNode, join(e.path, "cost"), "cost %d exceeds %s.maxTokens %d: the %s could never be called", e.cost, b.path, b.b.MaxTokens, what)
				}
			}
		}
	}
	for _, t := range tools {
		if t.shared == nil && t.perUser == nil && shared == nil && perUser == nil {
			w.addf(t.node, t.path, "limits nothing: give the tool shared or perUser, or set %s.shared or %s.perUser", path, path)
		}
		checkCost(t, "tool", shared, perUser, t.shared, t.perUser)
	}
	for _, m := range methods {
		if m.shared == nil && m.perUser == nil {
			w.addf(m.node, m.path, "limits nothing: give the method shared or perUser (%s.shared and %s.perUser apply to tools/call only)", path, path)
		}
		checkCost(m, "method", m.shared, m.perUser)
	}
}

// name reads a tool or method name: what clients send, compared exactly.
func (w *walker) name(n *yaml.Node, path string) (string, bool) {
	s, ok := w.str(n, path)
	if !ok {
		return "", false
	}
	switch {
	case s == "":
		w.addf(n, path, "must not be empty")
	case utf8.RuneCountInString(s) > maxNameLen:
		w.addf(n, path, "must be at most %d characters, got %d", maxNameLen, utf8.RuneCountInString(s))
	case strings.TrimSpace(s) != s:
		w.addf(n, path, "must not start or end with spaces, got %q", s)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		w.addf(n, path, "must not contain control characters, got %q", s)
	case strings.ContainsRune(s, utf8.RuneError):
		// Servers turn invalid text into U+FFFD each their own way (one per
		// byte, or one per broken sequence): a client could name this tool
		// to one server and another to the limiter.
		w.addf(n, path, "must not contain U+FFFD, the replacement character: servers decode invalid text to it in different ways, got %+q", s)
	default:
		return s, true
	}
	return "", false
}

// optBuckets reads the slot f[key] if present: one bucket (a map) or a list
// of 1..MaxBucketsPerSlot buckets. It returns non-nil whenever the key is
// present, even if invalid (see slot).
func (w *walker) optBuckets(f map[string]field, key, parent string) slot {
	x, ok := f[key]
	if !ok {
		return nil
	}
	path := join(parent, key)
	if x.val.Kind != yaml.SequenceNode {
		return slot{w.bucket(x.val, path)}
	}
	items, _ := w.list(x.val, path)
	s := make(slot, 0, len(items))
	switch {
	case len(items) == 0:
		w.addf(x.val, path, "must be a bucket or a list of 1 to %d buckets, got an empty list", MaxBucketsPerSlot)
		return s
	case len(items) > MaxBucketsPerSlot:
		w.addf(x.val, path, "must list at most %d buckets, got %d", MaxBucketsPerSlot, len(items))
	}
	first := map[time.Duration]int{} // refillPeriod -> index of its first bucket
	for i, item := range items {
		lb := w.bucket(item, index(path, i))
		// Two windows of one length: the smaller maxTokens always binds first,
		// so the other bucket only costs a key; say which to keep.
		if p := lb.b.RefillPeriod; p > 0 {
			if j, dup := first[p]; dup {
				keep := min(s[j].b.MaxTokens, lb.b.MaxTokens)
				w.addf(item, lb.path, "same refillPeriod %s as %s: the bucket with the smaller maxTokens (%d) always binds first, so the other never does; keep one", p, s[j].path, keep)
			} else {
				first[p] = i
			}
		}
		s = append(s, lb)
	}
	return s
}

// bucket reads one bucket at path. MaxTokens is kept even when the bucket is
// otherwise invalid, so that costs are still checked.
func (w *walker) bucket(n *yaml.Node, path string) limitBucket {
	lb := limitBucket{path: path}
	bf, ok := w.fields(n, path, bucketKeys, nil)
	if !ok {
		return lb
	}
	var max int64
	var period time.Duration
	mt, hasMax := bf["maxTokens"]
	rp, hasPeriod := bf["refillPeriod"]
	if hasMax {
		max, hasMax = w.integer(mt.val, join(path, "maxTokens"), 1, MaxTokensLimit)
		// Known even if refillPeriod is not, so that costs are still checked.
		lb.b.MaxTokens = max
	} else {
		w.missing(n, path, "maxTokens", "a bucket needs maxTokens and refillPeriod")
	}
	if hasPeriod {
		p := join(path, "refillPeriod")
		period, hasPeriod = w.duration(rp.val, p, MinRefillPeriod, MaxRefillPeriod, "744h (31 days)")
		// Buckets count in microseconds; a finer period would be rounded.
		if hasPeriod && period%time.Microsecond != 0 {
			w.addf(rp.val, p, "must be a whole number of microseconds, got %q", rp.val.Value)
			hasPeriod = false
		}
	} else {
		w.missing(n, path, "refillPeriod", "a bucket needs maxTokens and refillPeriod")
	}
	if !hasMax || !hasPeriod {
		return lb
	}
	// The store's clock ticks in microseconds: a faster refill cannot be exact.
	if period < time.Duration(max)*time.Microsecond {
		w.addf(n, path, "rate too high: at most one token per microsecond (maxTokens %d over refillPeriod %s)", max, rp.val.Value)
		return lb
	}
	lb.b = Bucket{MaxTokens: max, RefillPeriod: period}
	return lb
}
