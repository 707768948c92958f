package route

import (
	"slices"
	"strings"
	"testing"
)

// matchesSomeReading reports whether some reading of a request's authority
// and of its path, exact or folded, is selected by m, as the limiter's route
// tries them.
func matchesSomeReading(m Match, authority, path string) bool {
	if !ReadableAuthority(authority) {
		return false
	}
	found := false
	for a := range AuthorityReadings(authority) {
		found = found || m.MatchesAuthority(a)
	}
	if !found {
		return false
	}
	for r := range PathReadings(path) {
		if m.MatchesPath(r, false) || m.MatchesPath(r, true) {
			return true
		}
	}
	return false
}

func TestMatchMatches(t *testing.T) {
	tests := []struct {
		match           Match
		authority, path string
		want            bool
	}{
		{Match{}, "anything", "/x", true},
		{Match{Authority: "mcp.example.com"}, "MCP.example.com", "/", true},
		{Match{Authority: "mcp.example.com"}, "mcp.example.com:8443", "/", true},
		{Match{Authority: "mcp.example.com"}, "other.example.com", "/", false},
		{Match{Authority: "mcp.example.com:8443"}, "mcp.example.com:8443", "/", true},
		{Match{Authority: "mcp.example.com:8443"}, "mcp.example.com", "/", false},
		{Match{Authority: "mcp.example.com:8443"}, "mcp.example.com:443", "/", false},
		{Match{Authority: "[::1]"}, "[::1]:8080", "/", true},
		{Match{Authority: "[::1]:8080"}, "[::1]:9090", "/", false},
		{Match{PathPrefix: "/github"}, "h", "/github", true},
		{Match{PathPrefix: "/github"}, "h", "/github/mcp", true},
		{Match{PathPrefix: "/github"}, "h", "/github?session=1", true},
		{Match{PathPrefix: "/github"}, "h", "/github-enterprise/mcp", false},
		{Match{PathPrefix: "/github"}, "h", "/git", false},
		{Match{PathPrefix: "/github/"}, "h", "/github/x", true},
		{Match{PathPrefix: "/github/"}, "h", "/github", true}, // Express runs /github on a /github/ mount
		{Match{PathPrefix: "/"}, "h", "/anything", true},
		{Match{Authority: "a.example", PathPrefix: "/x"}, "a.example", "/y", false},
		// A trailing dot names the same host.
		{Match{Authority: "mcp.example.com"}, "MCP.example.com.", "/", true},
		{Match{Authority: "mcp.example.com"}, "mcp.example.com.:8443", "/", true},
		{Match{Authority: "mcp.example.com:8443"}, "mcp.example.com.:8443", "/", true},
		{Match{Authority: "mcp.example.com"}, "mcp.example.com..", "/", false},
		// Some reading of the path (PathReadings, exact or folded) matches:
		// every spelling a server runs as /github/mcp.
		{Match{PathPrefix: "/github"}, "h", "/%67ithub/mcp", true},            // Go's ServeMux, Starlette
		{Match{PathPrefix: "/github"}, "h", "/github%2Fmcp", true},            // Starlette decodes %2F
		{Match{PathPrefix: "/github"}, "h", "/GitHub/mcp", true},              // Express, ASP.NET Core
		{Match{PathPrefix: "/github"}, "h", "/github;jsessionid=1/mcp", true}, // Tomcat, Jetty
		{Match{PathPrefix: "/github"}, "h", "/x/../github/mcp", true},         // Tomcat, ASP.NET Core
		{Match{PathPrefix: "/github"}, "h", "//github/mcp", true},
		{Match{PathPrefix: "/github"}, "h", "/./github", true},
		{Match{PathPrefix: "/github"}, "h", "/%2e%2e/github", true},
		{Match{PathPrefix: "/github"}, "h", "/github%3Fx", false},        // an escaped "?" is part of the path
		{Match{PathPrefix: "/github"}, "h", "/github/../jira/mcp", true}, // as sent; Starlette's Mount runs it there
		{Match{PathPrefix: "/jira"}, "h", "/github/../jira/mcp", true},   // resolved
		{Match{PathPrefix: "/github"}, "h", `/github\mcp`, true},         // Hono reads a backslash as "/"
		{Match{PathPrefix: "/github"}, "h", "/g%C4%B0thub/mcp", true},    // Java's equalsIgnoreCase (Spring)
		{Match{PathPrefix: "/github"}, "h", "/%67ithub-enterprise", false},
		{Match{PathPrefix: "/github"}, "h", "/%zzgithub", false},
		{Match{PathPrefix: "/github/"}, "h", "/github%2F", true},
		{Match{PathPrefix: "/kelvin"}, "h", "/\u212aelvin", true}, // KELVIN SIGN folds to k
		{Match{PathPrefix: "/github"}, "h", "/gith\xffub", false},
	}
	for _, tt := range tests {
		if got := matchesSomeReading(tt.match, tt.authority, tt.path); got != tt.want {
			t.Errorf("%+v matches some reading of (%q, %q) = %v, want %v", tt.match, tt.authority, tt.path, got, tt.want)
		}
	}
}

func TestPathReadingsAreEveryWayARouterReadsAPath(t *testing.T) {
	tests := []struct {
		in   string
		want []string // the first is the path as sent
	}{
		{"/github/mcp?x=%2F..#f", []string{"/github/mcp"}},
		{"/GitHub/mcp", []string{"/GitHub/mcp"}}, // case is the comparison's business
		{"/.well-known/x", []string{"/.well-known/x"}},
		{"/%67ithub/mcp", []string{"/%67ithub/mcp", "/github/mcp"}},
		{"/a%2Fb", []string{"/a%2Fb", "/a/b"}},
		{"/a%252e", []string{"/a%252e", "/a%2e"}}, // decoded once, as servers do
		{"/github%3Fx", []string{"/github%3Fx", "/github?x"}},
		{"/github;jsessionid=1/mcp", []string{"/github;jsessionid=1/mcp", "/github/mcp"}},
		{"/github/..;/jira", []string{"/github/..;/jira", "/jira", "/github/../jira"}},
		{"/a//b/../c", []string{"/a//b/../c", "/a//c", "/a/c"}},
		{"/github/.", []string{"/github/.", "/github/"}},
		{"/x/..", []string{"/x/..", "/"}},
		{"/github/..%2F..%2Fjira/mcp", []string{"/github/..%2F..%2Fjira/mcp", "/jira/mcp", "/github/../../jira/mcp"}},
		{`/x\..\github/mcp`, []string{`/x\..\github/mcp`, "/x/../github/mcp", "/github/mcp"}},
		{"/a%zz/%4", []string{"/a%zz/%4"}},
	}
	for _, tt := range tests {
		got := slices.Collect(PathReadings(tt.in))
		if len(got) == 0 || got[0] != tt.want[0] {
			t.Errorf("PathReadings(%q) starts with %q, want %q", tt.in, got, tt.want[0])
		}
		slices.Sort(got)
		want := slices.Clone(tt.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("PathReadings(%q) = %q, want %q", tt.in, got, want)
		}
	}
}

func TestAuthorityReadingsAreEveryWayARouterReadsAHost(t *testing.T) {
	tests := []struct {
		in   string
		want []string // nil: not readable
	}{
		{"mcp.example.com", []string{"mcp.example.com"}},
		{"mcp.example.com:8443", []string{"mcp.example.com:8443"}},
		{"MCP.example.com", []string{"MCP.example.com", "mcp.example.com"}},
		{"mcp.example.com.", []string{"mcp.example.com.", "mcp.example.com"}},
		{"MCP.example.com.:8443", []string{"MCP.example.com.:8443", "MCP.example.com:8443", "mcp.example.com.:8443", "mcp.example.com:8443"}},
		{"[::1]:8080", []string{"[::1]:8080"}},
		{"[::1]", []string{"[::1]"}},
		{"h:", nil},
		{"h:65536", nil},
		{"h:+1", nil},
		{"h:00443", []string{"h:00443"}},
		{"", []string{""}},
		{".", []string{"."}},
		{"a.com:1:2", nil},
		{"a.com:x", nil},
		{"[::1]x", nil},
		{"[::1", nil},
		{"[mcp.example.com]:443", nil},
		{"[1.2.3.4]", nil},
		{"a]b", nil},
		{strings.Repeat("a", 253) + ".:65535", []string{strings.Repeat("a", 253) + ".:65535", strings.Repeat("a", 253) + ":65535"}},
		{strings.Repeat("a", 254) + ".:65535", nil},
	}
	for _, tt := range tests {
		if got := ReadableAuthority(tt.in); got != (tt.want != nil) {
			t.Errorf("ReadableAuthority(%q) = %v, want %v", tt.in, got, tt.want != nil)
		}
		if got := slices.Collect(AuthorityReadings(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("AuthorityReadings(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPathReadingsOfAPlainPathDoNotAllocate(t *testing.T) {
	p := "/github/mcp?session=1"
	m := Match{PathPrefix: "/github"}
	if n := testing.AllocsPerRun(100, func() { _ = matchesSomeReading(m, "h", p) }); n != 0 {
		t.Errorf("matching %q allocates %v times, want 0", p, n)
	}
}
