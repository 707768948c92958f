package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// oneTokenServers is a servers: policy in which each server holds one token an
// hour in its shared bucket; each pair is a server's name and its match in
// YAML ("" for a catch-all without one).
func oneTokenServers(servers ...[2]string) string {
	var b strings.Builder
	b.WriteString("servers:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "  - server: %s\n", s[0])
		if s[1] != "" {
			fmt.Fprintf(&b, "    match: %s\n", s[1])
		}
		b.WriteString("    rateLimiting:\n      shared: {maxTokens: 1, refillPeriod: 1h}\n")
	}
	return b.String()
}

// bareClient sends requests to url with Host host (url's when ""), without
// an initialize first: the servers here are stateless.
func bareClient(t *testing.T, url, host string) *rawClient {
	return &rawClient{t: t, url: url, host: host, hc: &http.Client{Timeout: 10 * time.Second}}
}

// Two MCP servers behind one route, told apart by path as one Go process hosts
// them (http.ServeMux). The mux reads the path percent-decoded, so it runs a
// call sent to "/%67ithub/mcp" on the github server: that call must be charged
// to github's buckets, not pass as a request that matches no server.
func TestPathSpelledOtherwiseIsChargedToTheServerThatRunsIt(t *testing.T) {
	github := demo.New(demo.Options{Stateless: true})
	jira := demo.New(demo.Options{Stateless: true})
	mux := http.NewServeMux()
	mux.Handle("/github/mcp", github)
	mux.Handle("/jira/mcp", jira)
	env := start(t, oneTokenServers([2]string{"github", "{pathPrefix: /github}"}, [2]string{"jira", "{pathPrefix: /jira}"}), harness.Options{UpstreamHandler: mux})

	checkPassed(t, "first call to /github/mcp", newRawClient(t, env.BaseURL+"/github/mcp").call("1", demo.ToolEcho))
	spelt := newRawClient(t, env.BaseURL+"/%67ithub/mcp")
	checkRejected(t, spelt.call("2", demo.ToolEcho), "2", "server", "shared")
	if got := github.Calls(demo.ToolEcho); got != 1 {
		t.Errorf("github server ran echo %d times, want 1 (its bucket holds 1)", got)
	}
	// jira's bucket is its own.
	checkPassed(t, "first call to /jira/mcp", newRawClient(t, env.BaseURL+"/jira/mcp").call("3", demo.ToolEcho))
	if got := jira.Calls(demo.ToolEcho); got != 1 {
		t.Errorf("jira server ran echo %d times, want 1", got)
	}
}

// With a catch-all server in the policy, a path that routers read as either
// server's is refused: the Go mux below runs "/github/..%2Fjira/mcp" on github
// (its subtree pattern sees the escaped slash as part of a segment) while
// Tomcat would run it on jira, and it runs "/GITHUB/mcp" on its catch-all
// while Express would run it on github. Charging either server could leave
// the one that runs the call uncharged, so the answer is 400 and neither runs.
func TestPathThatReadsAsTwoServersIsRefused(t *testing.T) {
	github := demo.New(demo.Options{Stateless: true})
	other := demo.New(demo.Options{Stateless: true})
	mux := http.NewServeMux()
	mux.Handle("/github/", github)
	mux.Handle("/", other)
	env := start(t, oneTokenServers([2]string{"github", "{pathPrefix: /github}"}, [2]string{"other", ""}), harness.Options{UpstreamHandler: mux})

	checkPassed(t, "first call to /github/mcp", newRawClient(t, env.BaseURL+"/github/mcp").call("1", demo.ToolEcho))
	for _, path := range []string{"/github/..%2Fjira/mcp", "/GITHUB/mcp"} {
		r := bareClient(t, env.BaseURL+path, "").call("2", demo.ToolEcho)
		if r.Status != http.StatusBadRequest || jsonField(r.Body, "id") == nil || string(jsonField(r.Body, "id")) != "2" {
			t.Errorf("%s: got %d %q, want 400 with a JSON-RPC error for id 2", path, r.Status, r.Body)
		}
	}
	if got, want := github.Calls(demo.ToolEcho)+other.Calls(demo.ToolEcho), 1; got != want {
		t.Errorf("servers ran echo %d times, want %d (the refused calls reach neither)", got, want)
	}
	// The catch-all's own bucket is untouched by the refusals.
	checkPassed(t, "first call to /other/mcp", newRawClient(t, env.BaseURL+"/other/mcp").call("3", demo.ToolEcho))
}

// A host name with a trailing dot is the same host (DNS reads "mcp.example.test."
// and "mcp.example.test" alike), and Envoy routes it by the same "*" virtual
// host: it must select the same server.
func TestHostWithTrailingDotIsChargedToItsServer(t *testing.T) {
	up := demo.New(demo.Options{Stateless: true, AnyHost: true})
	env := start(t, oneTokenServers([2]string{"example", "{authority: mcp.example.test}"}), harness.Options{UpstreamHandler: up})
	plain := bareClient(t, env.URL, "mcp.example.test")
	checkPassed(t, "first call", plain.call("1", demo.ToolEcho))
	dotted := bareClient(t, env.URL, "MCP.example.test.")
	checkRejected(t, dotted.call("2", demo.ToolEcho), "2", "server", "shared")
	if got := up.Calls(demo.ToolEcho); got != 1 {
		t.Errorf("upstream ran echo %d times, want 1 (the bucket holds 1)", got)
	}
}

// With a catch-all server, a host Envoy's virtual hosts would send to the
// catch-all's domains but that reads as another server's (letter case, a
// trailing dot) is refused, like an ambiguous path.
func TestHostThatReadsAsTwoServersIsRefused(t *testing.T) {
	up := demo.New(demo.Options{Stateless: true, AnyHost: true})
	env := start(t, oneTokenServers([2]string{"example", "{authority: mcp.example.test}"}, [2]string{"rest", ""}), harness.Options{UpstreamHandler: up})
	for _, host := range []string{"mcp.example.test.", "MCP.example.test", "mcp.example.test:1:2"} {
		r := bareClient(t, env.URL, host).call("2", demo.ToolEcho)
		if r.Status != http.StatusBadRequest {
			t.Errorf("Host %q: got %d %q, want 400", host, r.Status, r.Body)
		}
	}
	if got := up.Calls(demo.ToolEcho); got != 0 {
		t.Errorf("upstream ran echo %d times, want 0", got)
	}
	plain := bareClient(t, env.URL, "mcp.example.test")
	checkPassed(t, "plain host", plain.call("3", demo.ToolEcho))
	checkRejected(t, plain.call("4", demo.ToolEcho), "4", "server", "shared")
}

// The shipped Envoy configuration enables no upgrades, so a WebSocket upgrade is
// refused by Envoy at once: no WebSocket can carry tools/call messages past the
// processor (docs/deployment.md, "WebSocket upgrades").
func TestWebSocketUpgradeIsRefused(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	req, err := http.NewRequest(http.MethodGet, env.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("upgrade: got %d, want Envoy's 403 (upgrade_failed)", resp.StatusCode)
	}
}
