package integration

import (
	"bufio"
	"encoding/json"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// sseResult returns the JSON-RPC message of a response the TypeScript SDK sent
// as one SSE event (its stateless transport answers a POST with an event stream).
func sseResult(t *testing.T, r reply) json.RawMessage {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content-type: got %q (body %q), want text/event-stream", ct, r.Body)
	}
	sc := bufio.NewScanner(strings.NewReader(r.Body))
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			return json.RawMessage(data)
		}
	}
	t.Fatalf("no data line in the event stream %q", r.Body)
	return nil
}

// A stateless TypeScript SDK server behind Envoy runs exactly the calls the
// limit lets through: the bucket for search holds 2, so of 4 calls 2 reach the
// server's handler and answer with a result, and 2 are rejected with 429 before
// the TypeScript SDK reads them. The count comes from the server itself.
func TestTSServerRunsOnlyTheSearchCallsTheBucketHolds(t *testing.T) {
	ts := harness.StartTSServer(t)
	env := start(t, searchPolicy(2), harness.Options{UpstreamAddr: ts.Addr})
	// Stateless: every call stands alone, without initialize or a session.
	c := bareClient(t, env.URL, "")

	for i := range 4 {
		id := strconv.Itoa(i + 1)
		r := c.call(id, demo.ToolSearch)
		if i >= 2 {
			checkRejected(t, r, id, "tool:search", "shared")
			continue
		}
		if r.Status != http.StatusOK {
			t.Fatalf("call %s: got %d %q, want 200 from the TypeScript server", id, r.Status, r.Body)
		}
		msg := sseResult(t, r)
		if got := string(jsonField(string(msg), "id")); got != id {
			t.Errorf("call %s: got id %s, want %s", id, got, id)
		}
		var res struct {
			Content []struct{ Text string } `json:"content"`
			IsError bool                    `json:"isError"`
		}
		if err := json.Unmarshal(jsonField(string(msg), "result"), &res); err != nil || res.IsError ||
			len(res.Content) == 0 || !strings.HasPrefix(res.Content[0].Text, `1. result for "q"`) {
			t.Errorf("call %s: got %s, want search's result", id, msg)
		}
	}

	calls, err := ts.Calls(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{demo.ToolSearch: 2}; !maps.Equal(calls, want) {
		t.Errorf("calls the TypeScript server ran: got %v, want %v", calls, want)
	}
}
