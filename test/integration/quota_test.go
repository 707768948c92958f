package integration

import (
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// An allowed, limited call's HTTP response carries the ratelimit and
// ratelimit-policy headers of its bucket, added by Envoy from the metadata
// extproc sets (response.headersOnAllowed, on by default); an unlimited
// method's response carries neither, not even empty.
func TestAllowedAnswersCarryTheQuota(t *testing.T) {
	env := start(t, sharedPolicy(3), harness.Options{})
	raw := newRawClient(t, env.URL)

	r := raw.call("1", demo.ToolEcho)
	checkPassed(t, "first call", r)
	if got, want := r.Header.Values("Ratelimit"), []string{`"shared";r=2;t=1200`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ratelimit: got %q, want %q", got, want)
	}
	if got, want := r.Header.Values("Ratelimit-Policy"), []string{`"shared";q=3;w=3600`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ratelimit-policy: got %q, want %q", got, want)
	}
	r = raw.call("2", demo.ToolEcho)
	checkPassed(t, "second call", r)
	if got, want := r.Header.Get("Ratelimit"), `"shared";r=1;t=2400`; got != want {
		t.Errorf("second call ratelimit: got %q, want %q", got, want)
	}

	r = raw.post(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, nil)
	checkPassed(t, "tools/list", r)
	for _, h := range []string{"Ratelimit", "Ratelimit-Policy"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("tools/list: got %s %q, want no such header", h, v)
		}
	}
}

// headersOnAllowed false: allowed answers carry no quota headers.
func TestHeadersOnAllowedOff(t *testing.T) {
	env := start(t, sharedPolicy(3)+"response: {headersOnAllowed: false}\n", harness.Options{})
	raw := newRawClient(t, env.URL)
	r := raw.call("1", demo.ToolEcho)
	checkPassed(t, "call", r)
	for _, h := range []string{"Ratelimit", "Ratelimit-Policy"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("got %s %q, want no such header", h, v)
		}
	}
}
