package route

import (
	"cmp"
	"slices"
	"strings"
)

// Router chooses, among servers each selected by a Match, the server a request
// goes to. Servers are numbered by their order in New's list; the first whose
// Match matches a reading of the request is the one that reading selects.
type Router struct {
	matches []Match
	// byPath, byAuthority: some match has a pathPrefix (an authority), so a
	// request's path (authority) readings matter.
	byPath, byAuthority bool
}

// New returns a Router over matches, in order.
func New(matches []Match) *Router {
	r := &Router{matches: matches}
	for _, m := range matches {
		r.byPath = r.byPath || m.PathPrefix != ""
		r.byAuthority = r.byAuthority || m.Authority != ""
	}
	return r
}

// Route returns the server a request is charged to, or -1 when no server
// matches it. Each reading of the request (AuthorityReadings times
// PathReadings, each path compared exactly and case-folded) selects the first
// server that matches it; readings that select none do not count. When
// readings select different servers the request is ambiguous, and Route
// returns them all instead (ok false): whichever were charged, the server that
// really runs it might be another. An authority or path the limiter will not
// read (not host[:port], UnreadablePath) is ambiguous among every server it
// could go to, when there are two or more.
func (r *Router) Route(authority, path string) (server int, candidates []int, ok bool) {
	if !r.byAuthority && !r.byPath {
		// No match reads the request: the first server takes every one.
		if len(r.matches) == 0 {
			return -1, nil, true
		}
		return 0, nil, true
	}
	if !r.byAuthority {
		authority = ""
	}
	// The authority's readings, once: at most four (case by trailing dot).
	var as [4]string
	na := 0
	for a := range AuthorityReadings(authority) {
		as[na] = a
		na++
	}
	authorityOK := na > 0
	pathOK := !r.byPath || !UnreadablePath(path)
	if !authorityOK || !pathOK {
		candidates = r.possible(as[:na], authorityOK, path, pathOK)
		switch len(candidates) {
		case 0:
			return -1, nil, true
		case 1:
			return candidates[0], nil, true
		}
		return -1, candidates, false
	}
	server = -1
	pick := func(s int) {
		switch {
		case s < 0 || s == server || slices.Contains(candidates, s):
		case server < 0:
			server = s
		default:
			if candidates == nil {
				candidates = []int{server}
			}
			candidates = append(candidates, s)
		}
	}
	if !r.byPath {
		for _, a := range as[:na] {
			pick(r.First(a, "", false))
		}
	} else {
		// Path readings outside: each is worked out once.
		for p := range PathReadings(path) {
			for _, a := range as[:na] {
				pick(r.First(a, p, false))
				pick(r.First(a, p, true))
			}
		}
	}
	if candidates != nil {
		return -1, candidates, false
	}
	return server, nil, true
}

// possible lists, in order, the servers a request could go to when its
// authority or path cannot be read. A server counts when it is the first
// match for some reading of what can be read together with a stand-in for
// what cannot: its own authority (or "", a host no server names) and its own
// pathPrefix (or "/"). If an earlier server takes the stand-in, it takes every
// request the later one could.
func (r *Router) possible(authorities []string, authorityOK bool, path string, pathOK bool) []int {
	paths := []string{""}
	if pathOK && r.byPath {
		paths = slices.Collect(PathReadings(path))
	}
	var out []int
	for i, m := range r.matches {
		as, ps := authorities, paths
		if !authorityOK {
			as = []string{m.Authority}
		}
		if !pathOK {
			ps = []string{cmp.Or(m.PathPrefix, "/")}
		}
	reach:
		for _, a := range as {
			for _, p := range ps {
				if r.First(a, p, false) == i || r.First(a, p, true) == i {
					out = append(out, i)
					break reach
				}
			}
		}
	}
	return out
}

// Label returns the server a request without a body is counted under, or
// -1: such a request is never limited, so the request as sent decides.
func (r *Router) Label(authority, path string) int {
	if !ReadableAuthority(authority) {
		authority = ""
	}
	return r.First(strings.ToLower(authority), PathOf(path), false)
}

// First returns the first server that matches one reading of the authority
// and one of the path (compared case-folded if fold), or -1.
func (r *Router) First(authority, path string, fold bool) int {
	for i, m := range r.matches {
		if m.MatchesAuthority(authority) && m.MatchesPath(path, fold) {
			return i
		}
	}
	return -1
}
