package config

import (
	"slices"
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
	node *yaml.Node
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

// entry is a tools[] or methods[] item as parsed, for the checks that need
// the whole server (plans included).
type entry struct {
	node, costNode             *yaml.Node
	path                       string
	name                       string // "" when invalid
	cost                       int64
	shared, perUser, perTenant slot
}

// limitsBlock is a rateLimiting block, or a plan's limits, as parsed.
type limitsBlock struct {
	node                       *yaml.Node
	path                       string
	shared, perUser, perTenant slot
	tools, methods             []entry
}

// perIdentity lists the block's per-user and per-tenant slots, tools' and
// methods' included, absent ones too.
func (b *limitsBlock) perIdentity() []slot {
	out := []slot{b.perUser, b.perTenant}
	for _, e := range b.entries() {
		out = append(out, e.perUser, e.perTenant)
	}
	return out
}

// perTenantSlots lists the block's perTenant slots, tools' and methods'
// included, absent ones too.
func (b *limitsBlock) perTenantSlots() []slot {
	out := []slot{b.perTenant}
	for _, e := range b.entries() {
		out = append(out, e.perTenant)
	}
	return out
}

// entries is tools then methods.
func (b *limitsBlock) entries() []entry { return append(slices.Clip(b.tools), b.methods...) }

// list is the block's tools (kind "tool") or methods (kind "method").
func (b *limitsBlock) list(kind string) []entry {
	if kind == "tool" {
		return b.tools
	}
	return b.methods
}

// rateLimiting reads a rateLimiting block into s. The checks that need the
// server's plans and tenant run later (checkLimits).
func (w *walker) rateLimiting(n *yaml.Node, path string, s *Server) *limitsBlock {
	b := w.limits(n, path, rlKeys, toolKeys, nil)
	if b == nil {
		return nil
	}
	s.Shared, s.PerUser, s.PerTenant = b.shared.buckets(), b.perUser.buckets(), b.perTenant.buckets()
	for _, e := range b.tools {
		if s.Tools == nil {
			s.Tools = map[string]Tool{}
		}
		s.Tools[e.name] = Tool{Name: e.name, Cost: e.cost, Shared: e.shared.buckets(), PerUser: e.perUser.buckets(), PerTenant: e.perTenant.buckets()}
	}
	for _, e := range b.methods {
		if s.Methods == nil {
			s.Methods = map[string]Method{}
		}
		s.Methods[e.name] = Method{Name: e.name, Cost: e.cost, Shared: e.shared.buckets(), PerUser: e.perUser.buckets(), PerTenant: e.perTenant.buckets()}
	}
	return b
}

// limits reads a block of bucket slots with tools and methods lists: a
// rateLimiting block, or a plan's limits (which allow fewer keys). keys and
// entryKeys are the keys the block and its list items allow; hints explains
// known wrong keys in either.
func (w *walker) limits(n *yaml.Node, path string, keys, entryKeys []string, hints map[string]string) *limitsBlock {
	f, ok := w.fields(n, path, keys, hints)
	if !ok {
		return nil
	}
	b := &limitsBlock{node: n, path: path,
		shared:    w.optBuckets(f, "shared", path),
		perUser:   w.optBuckets(f, "perUser", path),
		perTenant: w.optBuckets(f, "perTenant", path),
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
			ef, ok := w.fields(item, p, entryKeys, hints)
			if !ok {
				continue
			}
			e := entry{node: item, path: p, cost: 1}
			if nf, ok := ef["name"]; ok {
				np := join(p, "name")
				if name, ok := w.name(nf.val, np); ok {
					e.name = name
					if first, dup := firstByName[name]; dup {
						w.addf(nf.val, np, "duplicate %s %q (first at %s)", what, name, first)
					} else {
						firstByName[name] = p
					}
					if key == "methods" && name == "tools/call" {
						w.addf(nf.val, np, "tools/call is limited by %s.shared, %s.perUser, %s.perTenant and %s.tools, not methods", path, path, path, path)
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
			e.perTenant = w.optBuckets(ef, "perTenant", p)
			out = append(out, e)
		}
		return out
	}
	b.tools = readEntries("tools", "tool")
	b.methods = readEntries("methods", "method")
	return b
}

// checkLimits runs the checks of a server's buckets that need all of them:
// something is limited, every tool and method has a bucket somewhere, every
// cost can be paid, perTenant has a tenant, and no bucket is out of reach of
// every user. rl is nil when rateLimiting was absent or not a map; plans is
// nil without plans.
func (w *walker) checkLimits(rl *limitsBlock, plans *plansBlock, s *Server, tenantSet bool) {
	if rl == nil {
		return
	}
	path := rl.path
	blocks := []*limitsBlock{rl}
	if plans != nil {
		blocks = append(blocks, plans.limits...)
	}
	// A plan may give a tool or method buckets that rateLimiting lists only
	// by name (or not at all).
	planned := func(kind, name string) bool {
		for _, b := range blocks[1:] {
			for _, e := range b.list(kind) {
				if e.name == name && (e.perUser != nil || e.perTenant != nil) {
					return true
				}
			}
		}
		return false
	}
	anyBucket := false
	serverSlots := false // buckets of every tools/call, in rateLimiting or a plan
	for _, b := range blocks {
		serverSlots = serverSlots || b.shared != nil || b.perUser != nil || b.perTenant != nil
		anyBucket = anyBucket || b.shared != nil || b.perUser != nil || b.perTenant != nil
		for _, e := range b.entries() {
			anyBucket = anyBucket || e.shared != nil || e.perUser != nil || e.perTenant != nil
		}
	}
	if !anyBucket {
		where := "shared, perUser or perTenant, or a tool or method with one of them"
		if plans != nil {
			where += ", here or in a plan"
		}
		w.addf(rl.node, path, "limits nothing: set %s", where)
		return
	}
	if !tenantSet {
		for _, b := range blocks {
			for _, sl := range b.perTenantSlots() {
				if len(sl) > 0 {
					w.addf(sl[0].node, sl[0].path, "perTenant buckets need tenant: the sources that name a user's tenant (for example tenant: [{jwtClaim: org_id}])")
				}
			}
		}
	}
	for _, t := range rl.tools {
		if t.shared == nil && t.perUser == nil && t.perTenant == nil && !serverSlots && !planned("tool", t.name) {
			w.addf(t.node, t.path, "limits nothing: give the tool shared, perUser or perTenant, or set %s.shared, %s.perUser or %s.perTenant", path, path, path)
		}
	}
	for _, m := range rl.methods {
		if m.shared == nil && m.perUser == nil && m.perTenant == nil && !planned("method", m.name) {
			w.addf(m.node, m.path, "limits nothing: give the method shared, perUser or perTenant (%s.shared, %s.perUser and %s.perTenant apply to tools/call only)", path, path, path)
		}
	}
	w.checkCosts(blocks)
}

// checkCosts reports every cost above the maxTokens of a bucket that charges
// it: such a call could never be paid, which is a configuration error, not a
// limit. A tool's cost also applies to its buckets in every plan.
func (w *walker) checkCosts(blocks []*limitsBlock) {
	rl := blocks[0]
	check := func(e entry, what string, slots ...slot) {
		for _, s := range slots {
			for _, b := range s {
				// A cost above 1 was written (costNode is set); the default
				// 1 never exceeds a valid maxTokens.
				if b.b.MaxTokens > 0 && e.cost > b.b.MaxTokens {
					w.addf(e.costNode, join(e.path, "cost"), "cost %d exceeds %s.maxTokens %d: the %s could never be called", e.cost, b.path, b.b.MaxTokens, what)
				}
			}
		}
	}
	for _, kind := range []string{"tool", "method"} {
		for _, e := range rl.list(kind) {
			for i, b := range blocks {
				slots := []slot{}
				if kind == "tool" {
					// The server-wide slots charge every tools/call.
					slots = append(slots, b.perUser, b.perTenant)
					if i == 0 {
						slots = append(slots, b.shared)
					}
				}
				for _, pe := range b.list(kind) {
					if pe.name == e.name {
						slots = append(slots, pe.shared, pe.perUser, pe.perTenant)
					}
				}
				check(e, kind, slots...)
			}
		}
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
	s.checkDominated(w)
	return s
}

// checkDominated reports a bucket that can never bind because another bucket
// of the slot holds no more tokens and refills no faster (a shorter period
// with fewer tokens is no exception: 5 per hour admits fewer calls in any
// minute than 10 per minute does). Charged by every call, the other bucket
// always runs out first; this one only costs a key. Same-period pairs are
// reported by optBuckets.
func (s slot) checkDominated(w *walker) {
	for i, a := range s {
		for j, b := range s {
			if i == j || a.b.MaxTokens == 0 || b.b.MaxTokens == 0 || a.b.RefillPeriod == b.b.RefillPeriod {
				continue
			}
			// b's rate <= a's rate, in integers: MaxTokens <= 1e9 and periods
			// <= 744h in ns (< 2.7e15) could overflow int64, so compare in
			// float64, exact enough for the policy's whole values.
			slower := float64(b.b.MaxTokens)/float64(b.b.RefillPeriod) <= float64(a.b.MaxTokens)/float64(a.b.RefillPeriod)
			if b.b.MaxTokens <= a.b.MaxTokens && slower {
				w.addf(a.node, a.path, "never binds: %s (maxTokens %d per %s) holds no more and refills no faster, so it always runs out first; drop this bucket or raise the other", b.path, b.b.MaxTokens, shortDuration(b.b.RefillPeriod))
				break
			}
		}
	}
}

// bucket reads one bucket at path. MaxTokens is kept even when the bucket is
// otherwise invalid, so that costs are still checked.
func (w *walker) bucket(n *yaml.Node, path string) limitBucket {
	lb := limitBucket{path: path, node: n}
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

// shortDuration writes d as a policy would: "1h", not "1h0m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
