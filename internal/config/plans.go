package config

import (
	yaml "go.yaml.in/yaml/v3"
)

var (
	plansKeys     = []string{"from", "default", "limits"}
	planKeys      = []string{"perUser", "perTenant", "tools", "methods"}
	planEntryKeys = []string{"name", "perUser", "perTenant"}
	planHints     = map[string]string{
		"shared": "a plan holds per-user and per-tenant buckets only: a shared bucket counts every user together, whatever their plan; keep it in rateLimiting",
		"cost":   "a call's cost is the same on every plan; set it in rateLimiting",
	}
)

// plansBlock is a plans: block as parsed, for the checks against the
// server's rateLimiting (checkPlans, checkLimits).
type plansBlock struct {
	path string
	// limits holds each plan's block, in file order; names[i] names limits[i].
	limits []*limitsBlock
	names  []string
}

// plans reads a plans: block. Plan names are bounded labels that go into
// metrics and Redis keys, so they follow the server name's rules.
func (w *walker) plans(n *yaml.Node, path string) (*Plans, *plansBlock) {
	f, ok := w.fields(n, path, plansKeys, nil)
	if !ok {
		return nil, nil
	}
	p := &Plans{Limits: map[string]PlanLimits{}}
	pb := &plansBlock{path: path}
	if x, ok := f["from"]; ok {
		p.From = w.sources(x.val, join(path, "from"), ": the sources of a user's plan name, e.g. [{jwtClaim: plan}]")
	} else {
		w.missing(n, path, "from", "the sources of a user's plan name, e.g. from: [{jwtClaim: plan}]")
	}
	x, ok := f["limits"]
	if !ok {
		w.missing(n, path, "limits", "each plan's per-user and per-tenant buckets, by plan name")
		if _, ok := f["default"]; !ok {
			w.missing(n, path, "default", "the plan of users whose plan value is missing or not listed; every user is on a plan")
		}
		return p, pb
	}
	lp := join(path, "limits")
	if x.val.Kind != yaml.MappingNode {
		w.addf(x.val, lp, "must be a map of plan names to their buckets, got %s", describe(x.val))
		return p, pb
	}
	if len(x.val.Content) == 0 {
		w.addf(x.val, lp, "must name at least one plan")
	}
	firstLine := map[string]int{}
	for i := 0; i+1 < len(x.val.Content); i += 2 {
		k, v := x.val.Content[i], deref(x.val.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			// YAML reads true, 1.0 or 0x10 as other types; kept as text, such a
			// name would never equal the claim JSON reads ("1.0" is 1).
			kp := lp
			if k.Kind == yaml.ScalarNode {
				kp = join(lp, k.Value)
			}
			w.addf(k, kp, "plan names must be strings, got %s; quote it", describe(k))
			continue
		}
		name, pp := k.Value, join(lp, k.Value)
		if line, dup := firstLine[name]; dup {
			w.addf(k, pp, "duplicate plan (first at line %d)", line)
			continue
		}
		firstLine[name] = k.Line
		if !serverNameRE.MatchString(name) {
			w.addf(k, pp, "a plan name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it is a metric label and part of Redis keys); got %q", name)
		}
		b := w.limits(v, pp, planKeys, planEntryKeys, planHints)
		if b == nil {
			continue
		}
		pl := PlanLimits{PerUser: b.perUser.buckets(), PerTenant: b.perTenant.buckets()}
		slots := func(es []entry) map[string]PlanSlots {
			if len(es) == 0 {
				return nil
			}
			m := make(map[string]PlanSlots, len(es))
			for _, e := range es {
				m[e.name] = PlanSlots{PerUser: e.perUser.buckets(), PerTenant: e.perTenant.buckets()}
			}
			return m
		}
		pl.Tools, pl.Methods = slots(b.tools), slots(b.methods)
		p.Limits[name] = pl
		pb.limits = append(pb.limits, b)
		pb.names = append(pb.names, name)
	}
	if x, ok := f["default"]; ok {
		dp := join(path, "default")
		if s, ok := w.str(x.val, dp); ok {
			if _, listed := p.Limits[s]; listed {
				p.Default = s
			} else if len(firstLine) > 0 {
				w.addf(x.val, dp, "names no plan in %s: %q", lp, s)
			}
		}
	} else {
		// Without it, a user whose claim is missing or misspelt ("Pro") would
		// be on no plan, and no plan's per-user buckets would apply to them.
		w.missing(n, path, "default", "the plan of users whose plan value is missing or not listed; every user is on a plan")
	}
	return p, pb
}

// checkPlans runs the checks between a server's plans and its rateLimiting
// block rl: every tool or method a plan names is in rl, and no per-user or
// per-tenant bucket of rl is left that no user is charged (every user is on
// a plan).
func (w *walker) checkPlans(rl *limitsBlock, pb *plansBlock, p *Plans) {
	if rl == nil || pb == nil {
		return
	}
	known := func(es []entry, name string) bool {
		for _, e := range es {
			if e.name == name {
				return true
			}
		}
		return false
	}
	for _, b := range pb.limits {
		for _, e := range b.tools {
			if e.name != "" && !known(rl.tools, e.name) {
				w.addf(e.node, join(e.path, "name"), "tool %q is not in %s.tools; list it there (a name alone will do), where its cost is set for every plan", e.name, rl.path)
			}
		}
		for _, e := range b.methods {
			if e.name != "" && !known(rl.methods, e.name) {
				w.addf(e.node, join(e.path, "name"), "method %q is not in %s.methods; list it there (a name alone will do), where its cost is set for every plan", e.name, rl.path)
			}
		}
	}
	for _, sl := range rl.perIdentity() {
		if len(sl) == 0 {
			continue
		}
		move := "a plan under " + join(pb.path, "limits")
		if p.Default != "" {
			move = join(pb.path, "limits."+p.Default)
		}
		w.addf(sl[0].node, sl[0].path, "never charged: with plans every user is on a plan, and a plan's per-user and per-tenant buckets replace rateLimiting's; move this bucket into %s", move)
	}
}
