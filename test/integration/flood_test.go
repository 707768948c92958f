package integration

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// floodPolicy admits floodAdmits searches, accepts gzip bodies and fails
// closed: whatever the flood does, no search may run past the bucket.
const floodAdmits = 20

const floodPolicy = `server: it
rateLimiting:
  tools:
    - name: search
      shared: {maxTokens: 20, refillPeriod: 1h}
failureMode: closed
requestCompression: {codings: [gzip]}
`

// floodBody is a gzip tools/call of search that inflates to about 4 MiB, the
// most the policy lets a body inflate to, from about 47 KB: its padding (in
// _meta, which the tool's argument schema does not see) is a run of letters
// with a random one every 200, which compresses about 90 times, just inside
// the default maxRatio of 100. It costs the client next to nothing to send
// and the limiter the most it accepts to read.
func floodBody(t *testing.T, id int) []byte {
	t.Helper()
	pad := make([]byte, 4<<20-200)
	for i := range pad {
		pad[i] = 'a'
		if i%200 == 0 {
			pad[i] = "abcdefghijklmnop"[rand.IntN(16)]
		}
	}
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	for _, part := range [][]byte{
		[]byte(`{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call","params":{"name":"search","arguments":{"query":"q"},"_meta":{"pad":"`),
		pad, []byte(`"}}}`),
	} {
		if _, err := w.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// inflating serves gzip request bodies to next inflated.
func inflating(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(zr)
			r.Header.Del("Content-Encoding")
			r.ContentLength = -1
		}
		next.ServeHTTP(w, r)
	})
}

// Sixty-four clients send the most expensive compressed body the policy
// accepts, all at once. Read all together they would push decisions past
// Envoy's message_timeout, and failure_mode_allow would then let them through
// undecided; read a few at a time, each gets an answer in time (admitted,
// limited, or 503 overloaded), and the server runs exactly the searches the
// bucket holds, while ordinary calls beside the flood still pass.
func TestCompressedBodyFloodRunsNoMoreCallsThanThePolicyAdmits(t *testing.T) {
	// The Go SDK server behind an inflating middleware, as Express's JSON
	// parser inflates for a TypeScript server: the flood's searches run.
	upstream := demo.New(demo.Options{Stateless: true})
	env := start(t, floodPolicy, harness.Options{UpstreamHandler: inflating(upstream)})
	body := floodBody(t, 1)
	const clients, each = 64, 4
	hc := &http.Client{Timeout: 30 * time.Second}
	post := func(b []byte, gz bool) (int, error) {
		req, err := http.NewRequest(http.MethodPost, env.URL, bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", protocolVersion)
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		errs     []error
		wg       sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for range each {
				status, err := post(body, true)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				statuses[status]++
				mu.Unlock()
			}
		})
	}
	// Ordinary calls of another tool, beside the flood: decided at once.
	for i := range 10 {
		status, err := post([]byte(callBody(strconv.Itoa(100+i), demo.ToolEcho)), false)
		if err != nil || status != http.StatusOK {
			t.Errorf("ordinary echo call during the flood: got %d %v, want 200", status, err)
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d flood requests failed, first: %v", len(errs), errs[0])
	}
	t.Logf("flood answers by status: %v", statuses)

	ran := upstream.Calls(demo.ToolSearch)
	if ran > floodAdmits || ran != statuses[http.StatusOK] {
		t.Errorf("server ran %d searches and %d were answered 200; want the same number, at most %d", ran, statuses[http.StatusOK], floodAdmits)
	}
	for status, n := range statuses {
		switch status {
		case http.StatusOK, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		default:
			t.Errorf("%d flood requests got %d, want 200, 429 or 503", n, status)
		}
	}
	// Every answer came from extproc in time: Envoy never decided for it.
	for _, stat := range []string{"http.mcp.ext_proc.message_timeouts", "http.mcp.ext_proc.failure_mode_allowed"} {
		if got := envoyStat(t, env.Envoy, stat); got != 0 {
			t.Errorf("envoy %s: got %d, want 0", stat, got)
		}
	}
}
