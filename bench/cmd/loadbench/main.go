// Command loadbench measures what the rate limiter costs through a real Envoy: one
// run starts an upstream MCP server, redis-server and, for each configuration, Envoy
// (and extproc), sends MCP tools/call POSTs at a fixed concurrency, and prints
// requests/s, latency percentiles and CPU per request for each configuration as a
// Markdown table, with ratios to Envoy without a filter (a).
//
// The machine it runs on is noisy: one configuration's req/s moves by ±20% from
// window to window, so one ratio says little. -rounds N runs the whole -configs list
// N times in a row; each result is compared with the (a) of its own round (the
// nearest (a) before it in the round, else the round's first), so slow drift of the
// machine hits both sides of a ratio alike. With N > 1 the tables get a round column
// and are followed by per-configuration medians of those ratios and, when (a), (c)
// and (d) ran, a check of (c) against the targets: ≥ 0.6 × (a), and closer to (d)
// than to half of (a); when (n) ran too, where that floor stands against the same
// midpoint; when (a), (c) and (r) ran, (c) against (r), Envoy's global rate-limit
// filter calling a rate-limit service that answers OK at no cost.
//
//	go run ./bench/cmd/loadbench                 # every configuration, 32 workers, 2 s + 10 s each
//	go run ./bench/cmd/loadbench -configs a,c,e -duration 5s -out bench/results
//	go run ./bench/cmd/loadbench -configs a,c,d -duration 8s -rounds 5
//
// Everything listens on loopback ports chosen at start. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "upstream":
		err = runUpstream(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "nullproc":
		err = runNullProcessor(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "nullrls":
		err = runNullRLS(ctx, os.Args[2:])
	default:
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

// maxRounds bounds -rounds: 50 rounds of every configuration at the defaults already
// take well over an hour.
const maxRounds = 50

// flags are loadbench's command line.
type flags struct {
	configs          []string
	rounds           int // times the whole configs list runs, 1..maxRounds
	load             loadOptions
	envoyConcurrency int
	// extprocProcs is GOMAXPROCS for the processor (extproc or nullproc); 0
	// leaves it to the Go runtime (the CPUs it may use).
	extprocProcs int
	// oldExtproc is an extproc binary built from an older commit, for c-old.
	oldExtproc string
	upstream   string
	out        string
	keep       bool
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	fs := flag.NewFlagSet("loadbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f flags
	configs := fs.String("configs", strings.Join(scenarioNames(false), ","), "configurations to run, in order (c-old also needs -old-extproc)")
	fs.IntVar(&f.rounds, "rounds", 1, "run the whole -configs list this many times in a row (1..50); "+
		"ratios are then against the (a) of the same round, and medians over the rounds follow the tables")
	fs.IntVar(&f.load.Concurrency, "concurrency", 32, "concurrent requests (one keep-alive connection each)")
	fs.DurationVar(&f.load.Warmup, "warmup", 2*time.Second, "load before each measured window")
	fs.DurationVar(&f.load.Duration, "duration", 10*time.Second, "measured window of each configuration")
	fs.IntVar(&f.load.MaxRequests, "max-requests", 2_000_000, "end a window early after this many requests")
	fs.IntVar(&f.load.Users, "users", 16, "distinct x-user-id values")
	fs.IntVar(&f.envoyConcurrency, "envoy-concurrency", 2, "Envoy worker threads (--concurrency)")
	fs.IntVar(&f.extprocProcs, "extproc-gomaxprocs", 0, "GOMAXPROCS for extproc and nullproc, as a CPU limit would set it; 0: the Go default")
	fs.StringVar(&f.upstream, "upstream", upstreamSDK, "upstream: sdk (Go SDK, stateless, JSON answers), sdk-sse (the same, SSE answers) or fixed (net/http, constant result)")
	fs.StringVar(&f.oldExtproc, "old-extproc", "", "an extproc binary built from an older commit, run by configuration c-old (e.g. git worktree add /tmp/old REV && go build -o /tmp/extproc-old ./cmd/extproc there)")
	fs.StringVar(&f.out, "out", "", "also write the report to DIR/<timestamp>.md (bench/results is git-ignored)")
	fs.BoolVar(&f.keep, "keep", false, "keep the run directory (configs, policies, process logs)")
	if err := fs.Parse(args); err != nil {
		return flags{}, err
	}
	for _, c := range strings.Split(*configs, ",") {
		sc, ok := scenarioByName(c)
		if !ok {
			return flags{}, fmt.Errorf("-configs: unknown configuration %q; want some of %s", c, strings.Join(scenarioNames(true), ","))
		}
		if sc.Old && f.oldExtproc == "" {
			return flags{}, fmt.Errorf("-configs: %s needs -old-extproc PATH", c)
		}
		f.configs = append(f.configs, c)
	}
	switch {
	case f.rounds < 1 || f.rounds > maxRounds:
		return flags{}, fmt.Errorf("-rounds: got %d, want 1..%d", f.rounds, maxRounds)
	case f.load.Concurrency < 1 || f.load.Concurrency > 1024:
		return flags{}, fmt.Errorf("-concurrency: got %d, want 1..1024", f.load.Concurrency)
	case f.load.Duration <= 0 || f.load.Duration > 10*time.Minute:
		return flags{}, fmt.Errorf("-duration: got %v, want > 0 and <= 10m", f.load.Duration)
	case f.load.Warmup < 0 || f.load.Warmup > time.Minute:
		return flags{}, fmt.Errorf("-warmup: got %v, want 0..1m", f.load.Warmup)
	case f.load.MaxRequests < 1:
		return flags{}, fmt.Errorf("-max-requests: got %d, want >= 1", f.load.MaxRequests)
	case f.envoyConcurrency < 1:
		return flags{}, fmt.Errorf("-envoy-concurrency: got %d, want >= 1", f.envoyConcurrency)
	case f.extprocProcs < 0:
		return flags{}, fmt.Errorf("-extproc-gomaxprocs: got %d, want >= 0", f.extprocProcs)
	}
	if _, err := upstreamHandler(f.upstream); err != nil {
		return flags{}, fmt.Errorf("-upstream: %w", err)
	}
	return f, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "loadbench-")
	if err != nil {
		return err
	}
	defer func() {
		if f.keep || err != nil {
			fmt.Fprintln(stderr, "loadbench: run directory kept:", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	r, err := newRunner(ctx, f, dir, stderr)
	if err != nil {
		return err
	}
	defer r.close()

	rep := report{flags: f, started: time.Now(), host: hostInfo(r)}
	if needsProbe(f.configs) {
		fmt.Fprintln(stderr, "loadbench: probing ext_proc with request headers SKIP")
		p, err := runProbe(ctx, r, probeAttributes)
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		rep.probe = &p
	}
	// A run that stops part-way still reports what finished (an hour of rounds is
	// not thrown away for the last one), then fails with runErr.
	results, runErr := runRounds(ctx, r, f, stderr)
	if runErr != nil && len(results) == 0 {
		return runErr
	}
	rep.results = results
	if runErr != nil {
		rep.stopped = runErr.Error()
	}

	text := rep.markdown()
	fmt.Fprint(stdout, text)
	if f.out != "" {
		if err := os.MkdirAll(f.out, 0o755); err != nil {
			return err
		}
		path := filepath.Join(f.out, rep.started.UTC().Format("20060102T150405Z")+".md")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "loadbench: wrote", path)
	}
	return runErr
}

// runRounds runs every configuration of f.configs in order, f.rounds times.
func runRounds(ctx context.Context, r *runner, f flags, stderr io.Writer) ([]roundResult, error) {
	var results []roundResult
	for round := 1; round <= f.rounds; round++ {
		// With one round, progress lines and errors read as they did before -rounds.
		prefix := ""
		if f.rounds > 1 {
			prefix = fmt.Sprintf("round %d/%d: ", round, f.rounds)
		}
		for _, name := range f.configs {
			sc, _ := scenarioByName(name)
			fmt.Fprintf(stderr, "loadbench: %s%s: %s\n", prefix, sc.Name, sc.Desc)
			res, err := r.runScenario(ctx, sc)
			if err != nil {
				// The rounds so far are still worth a report.
				return results, fmt.Errorf("%s%s: %w", prefix, sc.Name, err)
			}
			fmt.Fprintf(stderr, "loadbench: %s%s: %.0f req/s\n", prefix, sc.Name, res.rps())
			results = append(results, roundResult{result: res, round: round})
		}
	}
	return results, nil
}

// hostInfo describes the machine and the binaries for the report header.
func hostInfo(r *runner) string {
	cpus := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = fmt.Sprint(strings.Count(string(b), "\nprocessor") + 1)
		for _, l := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(l, "model name"); ok {
				cpus += " × " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("CPUs: %s; envoy: %s; redis-server: %s", cpus, r.envoyBin, r.redisBin)
}

// findTools returns envoy and redis-server, the way the integration tests find them.
func findTools() (envoy, redis string, err error) {
	if envoy, err = harness.EnvoyTool.Find(); err != nil {
		return "", "", fmt.Errorf("%w; run scripts/install-tools.sh or set ENVOY_BIN", err)
	}
	if redis, err = harness.RedisTool.Find(); err != nil {
		return "", "", fmt.Errorf("%w; install redis-server or set REDIS_SERVER", err)
	}
	return envoy, redis, nil
}
