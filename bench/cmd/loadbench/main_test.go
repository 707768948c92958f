package main

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

func TestParseStatCPUSumsUserAndSystemTicks(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want time.Duration
	}{
		{
			name: "plain command name",
			stat: "1234 (envoy) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0",
			want: 3 * time.Second,
		},
		{
			name: "command name with spaces and parentheses",
			stat: "99 (a (b) c) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0",
			want: 100 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if err != nil {
				t.Fatalf("parseStatCPU: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatCPURejectsATruncatedLine(t *testing.T) {
	for _, stat := range []string{"", "1 (x) S 1 2 3", "1 x S"} {
		if _, err := parseStatCPU([]byte(stat)); err == nil {
			t.Errorf("parseStatCPU(%q): got no error, want one", stat)
		}
	}
}

func TestCPUTimeReadsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if _, err := cpuTime(os.Getpid()); err != nil {
		t.Errorf("cpuTime(self): got error %v, want none", err)
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one value", ms(7), 0.999, 7 * time.Millisecond},
		{"median of 1..100", ms(hundred...), 0.50, 50 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the maximum", ms(hundred...), 0.999, 100 * time.Millisecond},
		{"p0 is the minimum", ms(3, 4, 5), 0, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseEvalCallsSumsEvalAndEvalsha(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_ping:calls=3,usec=1,usec_per_call=0.33,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=1200,usec=9000,usec_per_call=7.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_eval:calls=2,usec=30,usec_per_call=15.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha_ro:calls=99,usec=1,usec_per_call=0.01\r\n"
	if got, want := parseEvalCalls(info), int64(1202); got != want {
		t.Errorf("got %d, want %d", got, want)
	}
}

func TestParseEnvoyStatsKeepsIntegerCounters(t *testing.T) {
	in := "http.mcp.ext_proc.stream_msgs_sent: 42\n" +
		"http.mcp.ext_proc.failure_mode_allowed: 0\n" +
		"http.mcp.ext_proc.processing_latency: P0(nan,1) P25(nan,2)\n"
	got, err := parseEnvoyStats(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"http.mcp.ext_proc.stream_msgs_sent": 42, "http.mcp.ext_proc.failure_mode_allowed": 0}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %d, want %d", k, got[k], v)
		}
	}
}

func TestToolsCallIsAJSONRPCRequest(t *testing.T) {
	var msg struct {
		JSONRPC string `json:"jsonrpc"`
		ID      int    `json:"id"`
		Method  string `json:"method"`
		Params  struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	if err := json.Unmarshal(toolsCall(nil, 1_000_000_042, toolSearch), &msg); err != nil {
		t.Fatalf("toolsCall is not JSON: %v", err)
	}
	if msg.JSONRPC != "2.0" || msg.ID != 1_000_000_042 || msg.Method != "tools/call" || msg.Params.Name != toolSearch {
		t.Errorf("got %+v, want a tools/call of %s with id 1000000042", msg, toolSearch)
	}
}

func TestFixedUpstreamEchoesTheID(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantID     string
	}{
		{"number id", string(toolsCall(nil, 9, toolEcho)), http.StatusOK, "9"},
		{"string id", `{"jsonrpc":"2.0","id":"x-1","method":"tools/call"}`, http.StatusOK, `"x-1"`},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, http.StatusBadRequest, ""},
		{"not JSON", `hello`, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			fixedResult(w, httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(tt.body)))
			if w.Code != tt.wantStatus {
				t.Fatalf("got status %d, want %d", w.Code, tt.wantStatus)
			}
			if tt.wantID == "" {
				return
			}
			var got struct {
				ID json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			if string(got.ID) != tt.wantID {
				t.Errorf("got id %s, want %s", got.ID, tt.wantID)
			}
		})
	}
}

func TestSDKUpstreamAnswersAStatelessToolsCall(t *testing.T) {
	for _, kind := range []string{upstreamSDK, upstreamSDKSSE} {
		t.Run(kind, func(t *testing.T) {
			h, err := upstreamHandler(kind)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			status, err := post(context.Background(), srv.Client(), srv.URL+"/mcp", "u", toolsCall(nil, 1, toolEcho))
			if err != nil {
				t.Fatalf("post: %v", err)
			}
			if status != http.StatusOK {
				t.Errorf("got status %d, want 200", status)
			}
		})
	}
}

func TestParseFlagsRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown configuration", []string{"-configs", "a,z"}, `unknown configuration "z"`},
		{"zero concurrency", []string{"-concurrency", "0"}, "-concurrency: got 0"},
		{"zero duration", []string{"-duration", "0s"}, "-duration: got 0s"},
		{"unknown upstream", []string{"-upstream", "nginx"}, `upstream kind "nginx"`},
		{"zero rounds", []string{"-rounds", "0"}, "-rounds: got 0, want 1..50"},
		{"51 rounds", []string{"-rounds", "51"}, "-rounds: got 51, want 1..50"},
		{"negative GOMAXPROCS", []string{"-extproc-gomaxprocs", "-1"}, "-extproc-gomaxprocs: got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseFlagsDefaultsRunEveryConfiguration(t *testing.T) {
	f, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(f.configs, ","), "a,b,c,d,c-flood,e,n,n-connect,u,r"; got != want {
		t.Errorf("got configs %s, want %s", got, want)
	}
	if f.rounds != 1 {
		t.Errorf("got %d rounds, want 1", f.rounds)
	}
	if f.extprocProcs != 0 {
		t.Errorf("got extproc GOMAXPROCS %d, want 0 (the Go default)", f.extprocProcs)
	}
	if f.load.Concurrency != 32 || f.load.Duration != 10*time.Second || f.load.Warmup != 2*time.Second {
		t.Errorf("got concurrency %d, duration %v, warm-up %v; want 32, 10s, 2s", f.load.Concurrency, f.load.Duration, f.load.Warmup)
	}
}

func TestParseFlagsAcceptsRoundsInRange(t *testing.T) {
	for _, n := range []int{1, 3, 50} {
		f, err := parseFlags([]string{"-rounds", strconv.Itoa(n)}, io.Discard)
		if err != nil {
			t.Fatalf("-rounds %d: got error %v, want none", n, err)
		}
		if f.rounds != n {
			t.Errorf("-rounds %d: got %d rounds", n, f.rounds)
		}
	}
}

// fakeResult is a result of config in round that completed rps requests in one
// second with envoyCPU of CPU, so its CPU per 1k requests is envoyCPU/rps*1000.
func fakeResult(config string, round, rps int, envoyCPU time.Duration) roundResult {
	sc, ok := scenarioByName(config)
	if !ok {
		panic("unknown configuration " + config)
	}
	return roundResult{round: round, result: result{
		sc:   sc,
		load: loadResult{Elapsed: time.Second, Latencies: make([]time.Duration, rps), Status: map[int]int{http.StatusOK: rps}},
		cpu:  map[string]time.Duration{"envoy": envoyCPU},
	}}
}

func TestRatiosAreAgainstTheAOfTheSameRound(t *testing.T) {
	r := fakeResult
	tests := []struct {
		name    string
		results []roundResult
		want    []ratio // rps and cpu rounded to 3 decimals
	}{
		{
			name:    "one round, one a",
			results: []roundResult{r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second)},
			want:    []ratio{{1, 1, true}, {0.7, 1.429, true}},
		},
		{
			name: "each round has its own a",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 600, time.Second),
				r("a", 2, 500, time.Second), r("c", 2, 400, time.Second),
			},
			want: []ratio{{1, 1, true}, {0.6, 1.667, true}, {1, 1, true}, {0.8, 1.25, true}},
		},
		{
			name: "a round without a gets no ratio",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 600, time.Second),
				r("c", 2, 400, time.Second),
			},
			want: []ratio{{1, 1, true}, {0.6, 1.667, true}, {}},
		},
		{
			name: "several a in a round: the nearest one before",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 800, time.Second),
				r("a", 1, 500, time.Second), r("c", 1, 400, time.Second),
			},
			want: []ratio{{1, 1, true}, {0.8, 1.25, true}, {1, 1, true}, {0.8, 1.25, true}},
		},
		{
			name: "no a before in the round: the round's first a",
			results: []roundResult{
				r("a", 1, 2000, time.Second),
				r("c", 2, 600, time.Second), r("a", 2, 1000, time.Second), r("a", 2, 500, time.Second),
			},
			want: []ratio{{1, 1, true}, {0.6, 1.667, true}, {1, 1, true}, {1, 1, true}},
		},
		{
			name:    "an a that measured nothing gives no ratio",
			results: []roundResult{r("a", 1, 0, 0), r("c", 1, 600, time.Second)},
			want:    []ratio{{}, {}},
		},
	}
	round3 := func(x float64) float64 { return math.Round(x*1000) / 1000 }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ratios(tt.results)
			for i := range got {
				got[i].rps, got[i].cpu = round3(got[i].rps), round3(got[i].cpu)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMedianOfOddAndEvenCounts(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{"one value", []float64{0.7}, 0.7},
		{"odd count, unsorted", []float64{0.9, 0.5, 0.7}, 0.7},
		{"even count is the mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"two values", []float64{0.6, 0.8}, 0.7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.xs)
			if got := median(in); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if !slices.Equal(in, tt.xs) {
				t.Errorf("median reordered its input: %v, was %v", in, tt.xs)
			}
		})
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil): got %v, want NaN", got)
	}
}

func TestSummarizeGroupsByConfigInFirstAppearanceOrder(t *testing.T) {
	r := fakeResult
	results := []roundResult{
		r("c", 1, 900, time.Second), // no a in round 1: counted in req/s, not in ratios
		r("a", 2, 1000, time.Second), r("c", 2, 600, time.Second),
		r("a", 3, 1000, time.Second), r("c", 3, 800, time.Second),
	}
	sums := summarize(results, ratios(results))
	if len(sums) != 2 || sums[0].name != "c" || sums[1].name != "a" {
		t.Fatalf("got %+v, want c then a", sums)
	}
	c := sums[0]
	if got, want := median(c.rps), 800.0; got != want {
		t.Errorf("c req/s median: got %v, want %v", got, want)
	}
	if got, want := c.rpsRatios, []float64{0.6, 0.8}; !slices.Equal(got, want) {
		t.Errorf("c ratios: got %v, want %v", got, want)
	}
	if got, want := median(c.rpsRatios), 0.7; math.Abs(got-want) > 1e-12 {
		t.Errorf("c ×(a) median: got %v, want %v", got, want)
	}
}

func TestTargetLine(t *testing.T) {
	tests := []struct {
		name string
		c, d float64
		want string
	}{
		{
			name: "both met",
			c:    0.80, d: 0.98,
			want: "(c) median ×(a) = 0.80 (target ≥ 0.60: met); closer to (d) (0.98) than to half of (a) iff ×(a) > (0.98+0.50)/2 = 0.74: met",
		},
		{
			name: "at least 0.6 but nearer half of (a)",
			c:    0.69, d: 0.97,
			want: "(c) median ×(a) = 0.69 (target ≥ 0.60: met); closer to (d) (0.97) than to half of (a) iff ×(a) > (0.97+0.50)/2 = 0.73: not met",
		},
		{
			name: "neither met",
			c:    0.48, d: 1.00,
			want: "(c) median ×(a) = 0.48 (target ≥ 0.60: not met); closer to (d) (1.00) than to half of (a) iff ×(a) > (1.00+0.50)/2 = 0.75: not met",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := targetLine(tt.c, tt.d); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestTargetCheckNeedsRatiosOfACAndD(t *testing.T) {
	r := fakeResult
	tests := []struct {
		name    string
		results []roundResult
		want    string // "" for no line
	}{
		{
			name: "a, c and d in every round",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second), r("d", 1, 950, time.Second),
				r("a", 2, 1000, time.Second), r("c", 2, 500, time.Second), r("d", 2, 1000, time.Second),
				r("a", 3, 1000, time.Second), r("c", 3, 650, time.Second), r("d", 3, 990, time.Second),
			},
			want: "(c) median ×(a) = 0.65 (target ≥ 0.60: met); closer to (d) (0.99) than to half of (a) iff ×(a) > (0.99+0.50)/2 = 0.74: not met",
		},
		{
			name: "with n: the floor against the same midpoint",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second), r("d", 1, 1000, time.Second), r("n", 1, 740, time.Second),
			},
			want: "(c) median ×(a) = 0.70 (target ≥ 0.60: met); closer to (d) (1.00) than to half of (a) iff ×(a) > (1.00+0.50)/2 = 0.75: not met\n\n" +
				"(n), a processor that answers continue without deciding (the floor of any ext_proc processor): ×(a) = 0.74, not above the midpoint 0.75",
		},
		{
			name: "n above the midpoint",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second), r("d", 1, 1000, time.Second), r("n", 1, 800, time.Second),
			},
			want: "(c) median ×(a) = 0.70 (target ≥ 0.60: met); closer to (d) (1.00) than to half of (a) iff ×(a) > (1.00+0.50)/2 = 0.75: not met\n\n" +
				"(n), a processor that answers continue without deciding (the floor of any ext_proc processor): ×(a) = 0.80, above the midpoint 0.75",
		},
		{
			name:    "no d",
			results: []roundResult{r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second)},
		},
		{
			name:    "no a",
			results: []roundResult{r("c", 1, 700, time.Second), r("d", 1, 950, time.Second)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := targetCheck(summarize(tt.results, ratios(tt.results)))
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("got %q (ok %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestBaselineCheckPutsCAgainstR(t *testing.T) {
	r := fakeResult
	tests := []struct {
		name    string
		results []roundResult
		want    string // "" for no line
	}{
		{
			name: "a, c and r",
			results: []roundResult{
				r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second), r("r", 1, 800, time.Second),
				r("a", 2, 1000, time.Second), r("c", 2, 600, time.Second), r("r", 2, 900, time.Second),
			},
			want: "(r), Envoy's global rate-limit filter calling a null rate-limit service (the floor of that path): ×(a) = 0.85; " +
				"(c) ×(a) = 0.65, 0.76 × (r)",
		},
		{
			name:    "no r",
			results: []roundResult{r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second)},
		},
		{
			name:    "no a",
			results: []roundResult{r("c", 1, 700, time.Second), r("r", 1, 800, time.Second)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := baselineCheck(summarize(tt.results, ratios(tt.results)))
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("got %q (ok %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestMarkdownShowsRoundsOnlyWhenThereAreSeveral(t *testing.T) {
	r := fakeResult
	one := report{flags: flags{rounds: 1}, results: []roundResult{
		r("a", 1, 1000, time.Second), r("c", 1, 700, time.Second), r("d", 1, 950, time.Second),
	}}
	three := report{flags: flags{rounds: 3}}
	for round := 1; round <= 3; round++ {
		three.results = append(three.results,
			r("a", round, 1000, time.Second), r("c", round, 600+50*round, time.Second), r("d", round, 1000, time.Second))
	}
	tests := []struct {
		name        string
		rep         report
		want, wantN []string // substrings that must, and must not, appear
	}{
		{
			name: "one round: the table as before -rounds",
			rep:  one,
			want: []string{
				"\n| config | req/s | ×(a) |",
				"\n| a Envoy, no filter | 1000 | 1.00 | ",
				"\n| c Envoy + extproc, Redis | 700 | 0.70 | ",
				"\n| c | 1.429 | – | – | – | 0.000 |\n",
			},
			wantN: []string{"round", "Medians", "target"},
		},
		{
			name: "three rounds: round column, medians and the target line",
			rep:  three,
			want: []string{
				"3 rounds of the configurations",
				"\n| round | config | req/s | ×(a) |",
				"\n| 2 | c Envoy + extproc, Redis | 700 | 0.70 | ",
				"\n| round | config | envoy |",
				"\n| 3 | c | 1.333 | – |",
				"\nMedians over 3 rounds",
				"\n| c | 3 | 700 | 0.70 | 0.65–0.75 | 1.429 | 1.43 |\n",
				"\n| a | 3 | 1000 | 1.00 | 1.00–1.00 | 1.000 | 1.00 |\n",
				"\n(c) median ×(a) = 0.70 (target ≥ 0.60: met); closer to (d) (1.00) than to half of (a) iff ×(a) > (1.00+0.50)/2 = 0.75: not met\n",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := tt.rep.markdown()
			for _, w := range tt.want {
				if !strings.Contains(md, w) {
					t.Errorf("missing %q in\n%s", w, md)
				}
			}
			for _, w := range tt.wantN {
				if strings.Contains(md, w) {
					t.Errorf("unexpected %q in\n%s", w, md)
				}
			}
		})
	}
}

// Every configuration's Envoy bootstrap must be YAML, and, when Envoy is installed,
// one that Envoy accepts.
func TestEnvoyConfigsAreValid(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			p := envoyParamsFor(sc)
			p.ListenPort, p.AdminPort, p.UpstreamPort, p.ExtprocPort = 10000, 9901, 8080, 50051
			if sc.UnixSocket {
				p.ExtprocSocket = "/tmp/loadbench/extproc.sock"
			}
			cfg, err := renderEnvoy(p)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(cfg, &doc); err != nil {
				t.Fatalf("not YAML: %v\n%s", err, cfg)
			}
			envoyBin := harness.EnvoyTool.Require(t) // fails with CI=true, skips otherwise
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(envoyBin, "--mode", "validate", "-c", path, "--disable-hot-restart").CombinedOutput()
			if err != nil {
				t.Errorf("envoy --mode validate: %v\n%s\n%s", err, out, cfg)
			}
		})
	}
}

func TestMarkdownOfAStoppedRunSaysSoAndKeepsWhatFinished(t *testing.T) {
	rep := report{flags: flags{rounds: 3}, stopped: "round 2/3: c: envoy exited",
		results: []roundResult{fakeResult("a", 1, 2000, time.Second), fakeResult("c", 1, 1400, time.Second)}}
	md := rep.markdown()
	for _, want := range []string{"**Incomplete run**: it stopped at round 2/3: c: envoy exited", "| 1 | c "} {
		if !strings.Contains(md, want) {
			t.Errorf("missing %q in\n%s", want, md)
		}
	}
	if md := (report{flags: flags{rounds: 1}, results: rep.results[:1]}).markdown(); strings.Contains(md, "Incomplete") {
		t.Errorf("a finished run reads as incomplete:\n%s", md)
	}
}

func TestProcessorSocketPathsAreNumberedAndChecked(t *testing.T) {
	u, _ := scenarioByName("u")
	r := &runner{dir: "/tmp/loadbench-1"}
	addr, grpcAddr, err := r.processorListenAddr(u, "03-u")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/tmp/loadbench-1/extproc-03-u.sock"; addr.socket != want || grpcAddr != "unix://"+want {
		t.Errorf("got %q and %q, want socket %s", addr.socket, grpcAddr, want)
	}

	r.dir = "/" + strings.Repeat("d", maxSocketPath)
	if _, _, err := r.processorListenAddr(u, "03-u"); err == nil || !strings.Contains(err.Error(), "TMPDIR") {
		t.Errorf("socket path over %d bytes: got %v, want an error naming TMPDIR", maxSocketPath, err)
	}
}

func TestStartProcEnvAddsToLoadbenchsEnvironment(t *testing.T) {
	t.Setenv("LOADBENCH_TEST_INHERITED", "kept")
	dir := t.TempDir()
	p, err := startProcEnv(dir, "env", "/bin/sh", []string{"GOMAXPROCS=1"}, "-c", `echo "$GOMAXPROCS $LOADBENCH_TEST_INHERITED"`)
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	out, err := os.ReadFile(filepath.Join(dir, "env.log"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "1 kept" {
		t.Errorf("child saw %q, want %q", got, "1 kept")
	}
}
