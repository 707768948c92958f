package route

import (
	"strings"
	"testing"
)

// servers are four servers told apart by authority and path, as a policy's
// servers: list holds them.
var servers = []Match{
	{Authority: "mcp.example.com", PathPrefix: "/github"},
	{Authority: "mcp.example.com:8443"},
	{PathPrefix: "/jira"},
	{},
}

// FuzzRoute checks, for any :authority and :path against servers told apart
// by both, that Route never panics, refuses only when at least two servers
// are in doubt, and charges a server only if some reading of the request
// selects it (or the request cannot be read and it is the one server that
// could take it).
func FuzzRoute(f *testing.F) {
	r := New(servers)
	for _, s := range [][2]string{
		{"mcp.example.com", "/github/mcp"}, {"MCP.example.com.", "/%67ithub/mcp"}, {"mcp.example.com:8443", "/jira/..%2Fgithub"},
		{"a:1:2", "/x"}, {"[::1]:80", "/jira%0A"}, {"", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, authority, path string) {
		server, candidates, ok := r.Route(authority, path)
		if !ok {
			if len(candidates) < 2 {
				t.Fatalf("Route(%q, %q) refused with %d candidates", authority, path, len(candidates))
			}
			return
		}
		if server < 0 {
			return
		}
		if !ReadableAuthority(authority) || UnreadablePath(path) {
			return
		}
		for a := range AuthorityReadings(authority) {
			for p := range PathReadings(path) {
				if r.First(a, p, false) == server || r.First(a, p, true) == server {
					return
				}
			}
		}
		t.Fatalf("Route(%q, %q) charged server %d, which no reading selects", authority, path, server)
	})
}

// BenchmarkRoute measures choosing a server: a plain request, a path with
// escapes and dot segments to read several ways, the longest such path that is
// still read (MaxReadPath) against one just past it, which is refused without
// reading, and a host to read several ways.
func BenchmarkRoute(b *testing.B) {
	r := New([]Match{
		{Authority: "mcp.example.com", PathPrefix: "/example"},
		{PathPrefix: "/github"},
		{PathPrefix: "/jira"},
		{},
	})
	long := "/github/" + strings.Repeat("%61/./", (MaxReadPath-8)/6)
	for _, bm := range []struct{ name, authority, path string }{
		{"plain", "h", "/github/mcp?session=1"},
		{"escapes_and_dots", "h", "/github/..%2Fjira/./mcp;v=1"},
		{"longest_read", "h", long},
		{"too_long", "h", long + strings.Repeat("%61/./", 10)},
		{"host_to_read", "MCP.Example.com.:8443", "/example/..%2Fmcp"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Route(bm.authority, bm.path)
			}
		})
	}
}
