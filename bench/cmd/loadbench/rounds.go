package main

import (
	"fmt"
	"math"
	"slices"
)

// baseConfig is the configuration every ratio is relative to: Envoy without a filter.
const baseConfig = "a"

// The targets for (c), as ×(a) req/s: at least minRatioC, and closer to (d)
// than to halfOfA.
const (
	minRatioC = 0.60
	halfOfA   = 0.50
)

// roundResult is one configuration's result in one round of the run.
type roundResult struct {
	result
	round int // 1-based
}

// ratio is a result's req/s and CPU per request relative to the (a) of its round.
type ratio struct {
	rps, cpu float64
	ok       bool // false when the round has no (a) that measured anything
}

// ratios returns the ratio of every result, in order.
func ratios(results []roundResult) []ratio {
	out := make([]ratio, len(results))
	for i := range results {
		if b := baseIndex(results, i); b >= 0 {
			out[i] = ratioTo(results[i].result, results[b].result)
		}
	}
	return out
}

// baseIndex returns the index of the (a) that results[i] is compared with: the
// nearest (a) at or before i in the same round, so that a round like a,c,a,c pairs
// each (c) with the (a) measured just before it; else the round's first (a). It
// returns -1 when the round has no (a): a ratio to another round's (a) would mix in
// the drift between rounds that -rounds exists to keep out.
func baseIndex(results []roundResult, i int) int {
	isBase := func(j int) bool {
		return results[j].round == results[i].round && results[j].sc.Name == baseConfig
	}
	for j := i; j >= 0; j-- {
		if isBase(j) {
			return j
		}
	}
	for j := i + 1; j < len(results); j++ {
		if isBase(j) {
			return j
		}
	}
	return -1
}

// ratioTo returns r relative to base; not ok when base measured no requests or no
// CPU, where a ratio would be infinite or meaningless.
func ratioTo(r, base result) ratio {
	if base.rps() <= 0 || base.systemCPU() <= 0 {
		return ratio{}
	}
	return ratio{
		rps: r.rps() / base.rps(),
		cpu: r.per1k(r.systemCPU()) / base.per1k(base.systemCPU()),
		ok:  true,
	}
}

// median returns the middle value of xs, the mean of the two middle values for an
// even count, and NaN for none. xs is left as it is: callers keep their order.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// configSummary is one configuration's figures over all rounds.
type configSummary struct {
	name string
	rps  []float64 // req/s, one per result
	cpu  []float64 // CPU s/1k req, one per result
	// rpsRatios and cpuRatios are the ×(a) ratios of the results whose round had an
	// (a); they can be fewer than rps.
	rpsRatios, cpuRatios []float64
}

// summarize groups results by configuration, in order of first appearance.
func summarize(results []roundResult, rs []ratio) []configSummary {
	var out []configSummary
	index := map[string]int{}
	for i, r := range results {
		k, seen := index[r.sc.Name]
		if !seen {
			k = len(out)
			index[r.sc.Name] = k
			out = append(out, configSummary{name: r.sc.Name})
		}
		s := &out[k]
		s.rps = append(s.rps, r.rps())
		s.cpu = append(s.cpu, r.per1k(r.systemCPU()))
		if rs[i].ok {
			s.rpsRatios = append(s.rpsRatios, rs[i].rps)
			s.cpuRatios = append(s.cpuRatios, rs[i].cpu)
		}
	}
	return out
}

// ratioMedians returns each configuration's median ×(a) req/s, for those that
// have ratios.
func ratioMedians(sums []configSummary) map[string]float64 {
	medians := map[string]float64{}
	for _, s := range sums {
		if len(s.rpsRatios) > 0 {
			medians[s.name] = median(s.rpsRatios)
		}
	}
	return medians
}

// targetCheck returns the line that checks (c) against the targets from
// the median ×(a) of (c) and (d); not ok unless (a), (c) and (d) all have ratios.
func targetCheck(sums []configSummary) (string, bool) {
	medians := ratioMedians(sums)
	_, okA := medians[baseConfig]
	c, okC := medians["c"]
	d, okD := medians["d"]
	if !okA || !okC || !okD {
		return "", false
	}
	line := targetLine(c, d)
	if n, ok := medians["n"]; ok {
		line += "\n\n" + floorLine(n, d)
	}
	return line, true
}

// baselineCheck puts (c) against (r), Envoy's global rate-limit path with a
// rate-limit service that answers OK at no cost: a limiter built on that path
// pays at least (r)'s price before it counts anything, so (c) at or above (r)
// costs no more than the cheapest such limiter could. Not ok unless (a), (c) and
// (r) all have ratios.
func baselineCheck(sums []configSummary) (string, bool) {
	medians := ratioMedians(sums)
	_, okA := medians[baseConfig]
	c, okC := medians["c"]
	r, okR := medians["r"]
	if !okA || !okC || !okR {
		return "", false
	}
	return fmt.Sprintf("(r), Envoy's global rate-limit filter calling a null rate-limit service (the floor of that path): ×(a) = %.2f; "+
		"(c) ×(a) = %.2f, %.2f × (r)", r, c, c/r), true
}

// floorLine puts (n) against the same midpoint: (n) answers continue without
// deciding, so no processor behind this Envoy configuration can do better, and
// when (n) itself is near the midpoint the second target is beyond any processor.
func floorLine(n, d float64) string {
	mid := midpoint(d)
	return fmt.Sprintf("(n), a processor that answers continue without deciding (the floor of any ext_proc processor): ×(a) = %.2f, %s the midpoint %.2f",
		n, aboveOrNot(n > mid), mid)
}

func aboveOrNot(above bool) string {
	if above {
		return "above"
	}
	return "not above"
}

// targetLine checks c, the ×(a) of (c), against at least minRatioC and against
// being closer to d, the ×(a) of (d), than to halfOfA: past the midpoint of the two.
// (d) never rejects and costs next to nothing, so d is near 1 and above halfOfA.
// The comparisons use the unrounded values.
func targetLine(c, d float64) string {
	mid := midpoint(d)
	return fmt.Sprintf("(c) median ×(a) = %.2f (target ≥ %.2f: %s); "+
		"closer to (d) (%.2f) than to half of (a) iff ×(a) > (%.2f+%.2f)/2 = %.2f: %s",
		c, minRatioC, metOrNot(c >= minRatioC), d, d, halfOfA, mid, metOrNot(c > mid))
}

// midpoint is the ×(a) past which a configuration is closer to (d), at d, than
// to half of (a).
func midpoint(d float64) float64 { return (d + halfOfA) / 2 }

func metOrNot(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}
