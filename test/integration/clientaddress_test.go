package integration

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// headerRecorder passes every request to next and keeps the headers of each, so a
// test can see what Envoy forwarded upstream.
type headerRecorder struct {
	next http.Handler
	mu   sync.Mutex
	seen []http.Header
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Header.Clone())
	h.mu.Unlock()
	h.next.ServeHTTP(w, r)
}

func (h *headerRecorder) last() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[len(h.seen)-1]
}

// sourceAddressPolicy gives each client address 2 tools/call an hour: nothing
// refills during the test, so a third call passing means a second bucket.
const sourceAddressPolicy = `server: it
rateLimiting:
  perUser: {maxTokens: 2, refillPeriod: 1h}
identity:
  - sourceAddress: {}
`

// A client that forges its forwarding headers must still be the one user its TCP
// peer address makes it: if Envoy derived source.address from X-Forwarded-For, every
// forged value would be a new user with a full bucket.
func TestForgedForwardedForNeverChangesTheUser(t *testing.T) {
	upstream := demo.New(demo.Options{})
	rec := &headerRecorder{next: upstream}
	env := start(t, sourceAddressPolicy, harness.Options{UpstreamHandler: rec})
	raw := newRawClient(t, env.URL)

	const calls = 6
	for i := range calls {
		id := strconv.Itoa(i + 1)
		forged := map[string]string{
			"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i+1),
			"X-Real-IP":       fmt.Sprintf("198.51.100.%d", i+1),
			"Forwarded":       fmt.Sprintf("for=192.0.2.%d", i+1),
			// Headers only Envoy itself may set: a client's copy must not be
			// taken as Envoy's word about where the request came from.
			"X-Envoy-External-Address": fmt.Sprintf("203.0.113.%d", i+1),
			"X-Envoy-Internal":         "true",
		}
		r := raw.post(callBody(id, demo.ToolEcho), forged)
		if i < 2 {
			checkPassed(t, "call "+id+" within the bucket", r)
			continue
		}
		checkRejected(t, r, id, "server", "perUser")
	}
	if got := upstream.Calls(demo.ToolEcho); got != 2 {
		t.Errorf("upstream echo calls: got %d, want 2 (one bucket of 2 for the one real client)", got)
	}

	// What the upstream is told: Envoy appends the peer it saw to the client's
	// X-Forwarded-For (for a loopback peer, Envoy's own address) and replaces the
	// client's X-Envoy-External-Address with the peer.
	h := rec.last() // call 2, the last one the limiter let through
	if got := h.Get("X-Forwarded-For"); !strings.HasPrefix(got, "203.0.113.2,") {
		t.Errorf("upstream X-Forwarded-For: got %q, want the forged 203.0.113.2 followed by the address Envoy appended", got)
	}
	if got := h.Get("X-Envoy-External-Address"); got == "" || got == "203.0.113.2" {
		t.Errorf("upstream X-Envoy-External-Address: got %q, want the peer Envoy saw", got)
	}
	if got := h.Get("X-Envoy-Internal"); got != "" {
		t.Errorf("upstream X-Envoy-Internal: got %q, want the client's copy dropped", got)
	}
}
