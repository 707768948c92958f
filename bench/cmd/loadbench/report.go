package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// report is the run's Markdown output.
type report struct {
	flags   flags
	started time.Time
	host    string
	probe   *probeResult
	results []roundResult
	// stopped is why the run ended before every round finished; "" when it did not.
	stopped string
}

// multiRound tells whether the run had several rounds. Only then do the tables get a
// round column and the medians section follow, so a one-round report reads as it
// did before -rounds.
func (rep report) multiRound() bool { return rep.flags.rounds > 1 }

func (rep report) markdown() string {
	var b strings.Builder
	f := rep.flags
	fmt.Fprintf(&b, "## loadbench %s\n\n", rep.started.UTC().Format(time.RFC3339))
	procs := ""
	if f.extprocProcs > 0 {
		procs = fmt.Sprintf("; extproc GOMAXPROCS=%d", f.extprocProcs)
	}
	fmt.Fprintf(&b, "%d concurrent keep-alive connections, %v warm-up + %v measured per configuration; "+
		"upstream %s; Envoy --concurrency %d%s. %s.\n\n",
		f.load.Concurrency, f.load.Warmup, f.load.Duration, f.upstream, f.envoyConcurrency, procs, rep.host)
	if rep.multiRound() {
		fmt.Fprintf(&b, "%d rounds of the configurations, one after the other; every ×(a) is against the (a) of the same round.\n\n", f.rounds)
	}
	if rep.stopped != "" {
		fmt.Fprintf(&b, "**Incomplete run**: it stopped at %s. The tables hold what finished before.\n\n", rep.stopped)
	}

	rs := ratios(rep.results)
	rep.writeMainTable(&b, rs)
	rep.writeCPUTable(&b)
	if rep.multiRound() {
		writeMedians(&b, f.rounds, summarize(rep.results, rs))
	}

	if p := rep.probe; p != nil {
		b.WriteString("\nProbe of configuration (e), request_header_mode SKIP + request_body_mode BUFFERED:\n\n")
		fmt.Fprintf(&b, "- messages the processor received for one POST: %s\n", strings.Join(p.Messages, ", "))
		fmt.Fprintf(&b, "- attributes[\"envoy.filters.http.ext_proc\"] of the first message: `%s`\n", p.Attributes)
	}
	return b.String()
}

// roundCell returns the leading round column of a row, header or separator line:
// with one round there is none.
func (rep report) roundCell(cell string) string {
	if !rep.multiRound() {
		return ""
	}
	return "| " + cell + " "
}

// writeMainTable writes one row per result; rs are the results' ratios.
func (rep report) writeMainTable(b *strings.Builder, rs []ratio) {
	b.WriteString(rep.roundCell("round") + "| config | req/s | ×(a) | p50 ms | p99 ms | p99.9 ms | CPU s/1k req | ×(a) | loadgen CPU s/1k | 429 | ext_proc msgs (r: RLS calls)/req | Redis calls/req | errors |\n")
	b.WriteString(rep.roundCell("--:") + "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for i, r := range rep.results {
		n := r.load.Requests()
		rpsRatio, cpuRatio := "", ""
		if rs[i].ok {
			rpsRatio = fmt.Sprintf("%.2f", rs[i].rps)
			cpuRatio = fmt.Sprintf("%.2f", rs[i].cpu)
		}
		msgs, evals := "–", "–"
		if usesProcessor(r.sc) && n > 0 {
			msgs = fmt.Sprintf("%.2f", float64(r.extprocMsgs)/float64(n))
		}
		if r.sc.Store == storeRedis && n > 0 {
			evals = fmt.Sprintf("%.3f", float64(r.evalCalls)/float64(n))
		}
		errs := fmt.Sprint(r.load.Errors + otherStatuses(r.load.Status))
		if r.extprocFailures > 0 {
			what := "ext_proc"
			if r.sc.Filter == filterRateLimit {
				what = "ratelimit"
			}
			errs += fmt.Sprintf(" (%s failures %d)", what, r.extprocFailures)
		}
		fmt.Fprintf(b, "%s| %s %s | %.0f | %s | %s | %s | %s | %.3f | %s | %.3f | %s | %s | %s | %s |\n",
			rep.roundCell(fmt.Sprint(r.round)), r.sc.Name, r.sc.Desc, r.rps(), rpsRatio,
			ms(percentile(r.load.Latencies, 0.50)), ms(percentile(r.load.Latencies, 0.99)), ms(percentile(r.load.Latencies, 0.999)),
			r.per1k(r.systemCPU()), cpuRatio, r.per1k(r.loadgenCPU),
			pct(r.load.Status[http.StatusTooManyRequests], n), msgs, evals, errs)
	}
}

// writeCPUTable writes each result's CPU per request split by process.
func (rep report) writeCPUTable(b *strings.Builder) {
	b.WriteString("\nCPU seconds per 1k requests by process (the CPU column above is their sum; " +
		"the extproc column is whatever Envoy calls: extproc, nullproc, or the null rate-limit service of (r)):\n\n")
	b.WriteString(rep.roundCell("round") + "| config | envoy | extproc | redis-server | upstream | loadgen |\n")
	b.WriteString(rep.roundCell("--:") + "|---|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.results {
		cell := func(name string) string {
			if d, ok := r.cpu[name]; ok {
				return fmt.Sprintf("%.3f", r.per1k(d))
			}
			return "–"
		}
		fmt.Fprintf(b, "%s| %s | %s | %s | %s | %s | %.3f |\n", rep.roundCell(fmt.Sprint(r.round)), r.sc.Name,
			cell("envoy"), cell("extproc"), cell("redis-server"), cell("upstream"), r.per1k(r.loadgenCPU))
	}
}

// writeMedians writes one row per configuration with its medians over the rounds,
// then the check of (c) against the targets when (a), (c) and (d) ran. A median of
// ratios, each taken within one round, resists both a noisy window and drift
// between rounds better than a ratio of medians would.
func writeMedians(b *strings.Builder, rounds int, sums []configSummary) {
	fmt.Fprintf(b, "\nMedians over %d rounds (×(a): median of the per-round ratios):\n\n", rounds)
	b.WriteString("| config | rounds | req/s median | ×(a) median | ×(a) min–max | CPU s/1k median | CPU ×(a) median |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range sums {
		rpsRatio, spread, cpuRatio := "", "", ""
		if len(s.rpsRatios) > 0 {
			rpsRatio = fmt.Sprintf("%.2f", median(s.rpsRatios))
			spread = fmt.Sprintf("%.2f–%.2f", slices.Min(s.rpsRatios), slices.Max(s.rpsRatios))
			cpuRatio = fmt.Sprintf("%.2f", median(s.cpuRatios))
		}
		fmt.Fprintf(b, "| %s | %d | %.0f | %s | %s | %.3f | %s |\n",
			s.name, len(s.rps), median(s.rps), rpsRatio, spread, median(s.cpu), cpuRatio)
	}
	if line, ok := targetCheck(sums); ok {
		b.WriteString("\n" + line + "\n")
	}
	if line, ok := baselineCheck(sums); ok {
		b.WriteString("\n" + line + "\n")
	}
}

// otherStatuses counts answers that are neither 200 nor 429.
func otherStatuses(m map[int]int) int {
	n := 0
	for code, c := range m {
		if code != http.StatusOK && code != http.StatusTooManyRequests {
			n += c
		}
	}
	return n
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func pct(k, n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(k)/float64(n))
}
