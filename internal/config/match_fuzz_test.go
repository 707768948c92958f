package config

import (
	"strings"
	"testing"
)

// FuzzServerPath checks that any :path reads as a clean path (nothing a router
// would resolve further) without panicking, and that a reading without escapes
// parameters, query or fragment marks left in it reads the same again: a prefix written that way is
// accepted by the parser and matched as written.
func FuzzServerPath(f *testing.F) {
	for _, p := range []string{"/github/mcp", "/%67ithub/mcp?x", "/a;b/../c//d/./", "/%2e%2e/%2F", "%", "/a%4", ";", "/..;/x"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got := ServerPath(p)
		if !strings.HasPrefix(p, "/") {
			return // not an origin-form path; only the absence of a panic matters
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("ServerPath(%q) = %q: not rooted", p, got)
		}
		trimmed := strings.TrimSuffix(got, "/")
		if strings.Contains(got, "//") || strings.Contains(got+"/", "/./") || strings.Contains(got+"/", "/../") || strings.HasSuffix(trimmed, "/.") {
			t.Fatalf("ServerPath(%q) = %q: not clean", p, got)
		}
		if !strings.ContainsAny(got, "%;?#") {
			if again := ServerPath(got); again != got {
				t.Fatalf("ServerPath(%q) = %q, which reads again as %q", p, got, again)
			}
		}
	})
}
