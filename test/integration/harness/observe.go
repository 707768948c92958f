package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// AccessLog returns the entries of Envoy's access log so far: the JSON lines
// envoy.yaml prints on stdout, one per request, in order. Envoy flushes its
// access log about once a second, so a test polls (WaitAccessLog).
func (e *Envoy) AccessLog() []map[string]any {
	return jsonLines(e.svc.Log())
}

// WaitAccessLog polls Envoy's access log until it holds at least n entries that
// match, and returns those.
func (e *Envoy) WaitAccessLog(ctx context.Context, n int, match func(map[string]any) bool) ([]map[string]any, error) {
	var got []map[string]any
	err := WaitFor(ctx, "envoy access log", e.svc, func(context.Context) error {
		got = got[:0]
		for _, entry := range e.AccessLog() {
			if match(entry) {
				got = append(got, entry)
			}
		}
		if len(got) < n {
			return fmt.Errorf("got %d matching access log entries, want %d", len(got), n)
		}
		return nil
	})
	return got, err
}

// LogRecords returns the records of a process that logs JSON (extproc with
// ExtprocOptions.LogFormat "json"); lines that are not JSON objects are skipped.
func (p *Process) LogRecords() []map[string]any {
	return jsonLines(p.Log())
}

// RSS returns the running process's resident set size in bytes, read from
// VmRSS in /proc/<pid>/status (Linux only): what the kernel holds in memory for
// it, which abuse tests bound.
func (p *Process) RSS() (int64, error) {
	pid := p.Pid()
	if pid == 0 {
		return 0, errors.New(p.Name + ": not running")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		// The kernel writes "VmRSS:\t   12345 kB".
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: VmRSS %q: %w", p.Name, strings.TrimSpace(v), err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%s: no VmRSS in /proc/%d/status (a zombie has none)", p.Name, pid)
}

// jsonLines decodes every line of s that is a JSON object.
func jsonLines(s string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
