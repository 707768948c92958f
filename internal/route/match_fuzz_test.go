package route

import (
	"strings"
	"testing"
)

// FuzzPathReadings checks that any :path yields its readings without
// panicking: the path as sent first (query and fragment dropped), then only
// distinct readings, no more than the 36 combinations, each rooted when the
// path is.
func FuzzPathReadings(f *testing.F) {
	for _, p := range []string{"/github/mcp", "/%67ithub/mcp?x", "/a;b/../c//d/./", "/%2e%2e/%2F", "%", "/a%4", ";", "/..;/x", `/x\..\y`} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		sent := p
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			sent = p[:i]
		}
		seen := map[string]bool{}
		for r := range PathReadings(p) {
			if len(seen) == 0 && r != sent {
				t.Fatalf("PathReadings(%q) starts with %q, want the path as sent %q", p, r, sent)
			}
			if seen[r] {
				t.Fatalf("PathReadings(%q) yields %q twice", p, r)
			}
			seen[r] = true
			if strings.HasPrefix(p, "/") && !strings.HasPrefix(r, "/") {
				t.Fatalf("PathReadings(%q) yields %q: not rooted", p, r)
			}
		}
		if len(seen) == 0 || len(seen) > 36 {
			t.Fatalf("PathReadings(%q) yields %d readings, want 1 to 36", p, len(seen))
		}
	})
}
