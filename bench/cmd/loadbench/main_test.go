package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
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
	if got, want := strings.Join(f.configs, ","), "a,b,c,d,c-flood,e"; got != want {
		t.Errorf("got configs %s, want %s", got, want)
	}
	if f.load.Concurrency != 32 || f.load.Duration != 10*time.Second || f.load.Warmup != 2*time.Second {
		t.Errorf("got concurrency %d, duration %v, warm-up %v; want 32, 10s, 2s", f.load.Concurrency, f.load.Duration, f.load.Warmup)
	}
}

// Every configuration's Envoy bootstrap must be YAML, and, when Envoy is installed,
// one that Envoy accepts.
func TestEnvoyConfigsAreValid(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			p := envoyParams{Filter: sc.Filter, SkipHeaders: sc.SkipHeaders, Attributes: probeAttributes,
				ListenPort: 10000, AdminPort: 9901, UpstreamPort: 8080, ExtprocPort: 50051}
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
