package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// report is the run's Markdown output.
type report struct {
	flags   flags
	started time.Time
	host    string
	probe   *probeResult
	results []result
}

func (rep report) markdown() string {
	var b strings.Builder
	f := rep.flags
	fmt.Fprintf(&b, "## loadbench %s\n\n", rep.started.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "%d concurrent keep-alive connections, %v warm-up + %v measured per configuration; "+
		"upstream %s; Envoy --concurrency %d. %s.\n\n",
		f.load.Concurrency, f.load.Warmup, f.load.Duration, f.upstream, f.envoyConcurrency, rep.host)

	var base *result
	for i := range rep.results {
		if rep.results[i].sc.Name == "a" {
			base = &rep.results[i]
		}
	}
	b.WriteString("| config | req/s | ×(a) | p50 ms | p99 ms | p99.9 ms | CPU s/1k req | ×(a) | loadgen CPU s/1k | 429 | ext_proc msgs/req | Redis calls/req | errors |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.results {
		n := r.load.Requests()
		rpsRatio, cpuRatio := "", ""
		if base != nil && base.rps() > 0 && base.systemCPU() > 0 {
			rpsRatio = fmt.Sprintf("%.2f", r.rps()/base.rps())
			cpuRatio = fmt.Sprintf("%.2f", r.per1k(r.systemCPU())/base.per1k(base.systemCPU()))
		}
		msgs, evals := "–", "–"
		if r.sc.Filter == filterExtproc && n > 0 {
			msgs = fmt.Sprintf("%.2f", float64(r.extprocMsgs)/float64(n))
		}
		if r.sc.Store == storeRedis && n > 0 {
			evals = fmt.Sprintf("%.3f", float64(r.evalCalls)/float64(n))
		}
		errs := fmt.Sprint(r.load.Errors + otherStatuses(r.load.Status))
		if r.extprocFailures > 0 {
			errs += fmt.Sprintf(" (ext_proc failures %d)", r.extprocFailures)
		}
		fmt.Fprintf(&b, "| %s %s | %.0f | %s | %s | %s | %s | %.3f | %s | %.3f | %s | %s | %s | %s |\n",
			r.sc.Name, r.sc.Desc, r.rps(), rpsRatio,
			ms(percentile(r.load.Latencies, 0.50)), ms(percentile(r.load.Latencies, 0.99)), ms(percentile(r.load.Latencies, 0.999)),
			r.per1k(r.systemCPU()), cpuRatio, r.per1k(r.loadgenCPU),
			pct(r.load.Status[http.StatusTooManyRequests], n), msgs, evals, errs)
	}

	b.WriteString("\nCPU seconds per 1k requests by process (the CPU column above is their sum):\n\n")
	b.WriteString("| config | envoy | extproc | redis-server | upstream | loadgen |\n|---|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.results {
		cell := func(name string) string {
			if d, ok := r.cpu[name]; ok {
				return fmt.Sprintf("%.3f", r.per1k(d))
			}
			return "–"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.3f |\n", r.sc.Name,
			cell("envoy"), cell("extproc"), cell("redis-server"), cell("upstream"), r.per1k(r.loadgenCPU))
	}

	if p := rep.probe; p != nil {
		b.WriteString("\nProbe of configuration (e), request_header_mode SKIP + request_body_mode BUFFERED:\n\n")
		fmt.Fprintf(&b, "- messages the processor received for one POST: %s\n", strings.Join(p.Messages, ", "))
		fmt.Fprintf(&b, "- attributes[\"envoy.filters.http.ext_proc\"] of the first message: `%s`\n", p.Attributes)
	}
	return b.String()
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
