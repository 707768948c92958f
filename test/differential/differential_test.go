package differential

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/body"
	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

// charsets are the charset parameters every body is sent with: none, then
// every charset the limiter reads (any other it refuses, which is safe). Most
// of them lie about most bodies, which is the point.
var charsets = []string{
	"", "utf-8", "UTF-8", "utf-16", "utf-16le", "utf-16be", "ucs-2",
	"utf-32", "utf-32le", "utf-32be", "us-ascii", "ascii",
}

// contentType is the header a body is sent with for a charset parameter.
func contentType(charset string) string {
	if charset == "" {
		return "application/json"
	}
	return "application/json; charset=" + charset
}

// uncharged returns what a server reading runs that the limiter's charged
// calls do not cover, or "" when they cover it. Each (method, name) must be
// charged as often as the reading runs it; names count for tools/call only. A
// tools/call without a name (or with one that is not text, or that holds
// U+FFFD, neither of which a policy may name: each then costs what any tool
// the policy does not name costs) needs only some tools/call charged: in all,
// a method must be charged as often as the reading runs it.
// A call with an empty method, or one that is not text or holds U+FFFD (no
// policy may name such a method, and none is tools/call), runs nothing a
// policy limits.
func uncharged(charged []mcp.Message, server []call) string {
	type key struct{ method, name string }
	named := func(method, name string) key {
		if method != "tools/call" {
			name = ""
		}
		return key{method, name}
	}
	need, needAll := map[key]int{}, map[string]int{}
	unnamed := false
	for _, c := range server {
		if c.Method == "" || (c.IllFormed && c.Method != "tools/call") || strings.ContainsRune(c.Method, '\uFFFD') {
			continue
		}
		needAll[c.Method]++
		if c.Method == "tools/call" && (c.Name == "" || c.IllFormed || strings.ContainsRune(c.Name, '\uFFFD')) {
			unnamed = true
			continue
		}
		need[named(c.Method, c.Name)]++
	}
	have, haveAll := map[key]int{}, map[string]int{}
	for _, m := range charged {
		have[named(m.Method, m.Name)]++
		haveAll[m.Method]++
	}
	var missing []string
	for _, k := range slices.SortedFunc(maps.Keys(need), func(a, b key) int {
		return strings.Compare(a.method+"\x00"+a.name, b.method+"\x00"+b.name)
	}) {
		if have[k] < need[k] {
			missing = append(missing, fmt.Sprintf("%s %q ×%d (charged ×%d)", k.method, k.name, need[k], have[k]))
		}
	}
	if n := needAll["tools/call"]; unnamed && haveAll["tools/call"] < n {
		missing = append(missing, fmt.Sprintf("tools/call ×%d, some unnamed (charged ×%d)", n, haveAll["tools/call"]))
	}
	return strings.Join(missing, "; ")
}

// disagreement is one server reading the limiter did not cover.
type disagreement struct {
	label, contentType, reader, missing string
	body                                []byte
	server                              []call
	charged                             []mcp.Message
}

func (d disagreement) String() string {
	var charged []string
	for _, m := range d.charged {
		charged = append(charged, fmt.Sprintf("%s %q", m.Method, m.Name))
	}
	return fmt.Sprintf("%s, Content-Type %q: reader %s runs %s, which the limiter neither refused nor charged (it charged [%s])\n\tbody (%d bytes): %s",
		d.label, d.contentType, d.reader, d.missing, strings.Join(charged, ", "), len(d.body), quote(d.body))
}

// quote shows a body as a Go string literal, cut in the middle when long.
func quote(b []byte) string {
	const keep = 240
	if len(b) <= 2*keep {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:keep])) + " … " + strconv.Quote(string(b[len(b)-keep:]))
}

// check reads every entry with the limiter and with every server reader, once
// per charset, and returns every disagreement.
func check(t *testing.T, r *readers, entries []entry) []disagreement {
	t.Helper()
	bodies := make([][]byte, len(entries))
	for i, e := range entries {
		bodies[i] = e.body
	}
	readings, err := r.readAll(bodies, charsets)
	if err != nil {
		t.Fatal(err)
	}
	var out []disagreement
	for i, e := range entries {
		plain := readings[i].plain
		for _, cs := range charsets {
			ct := contentType(cs)
			rd, err := body.Read(e.body, "", ct, body.Options{})
			if err != nil {
				continue // refused: nothing reaches a server
			}
			iconv, ok := readings[i].iconv[cs]
			if !ok {
				t.Fatalf("reader.mjs gave no iconv reading for charset %q", cs)
			}
			for _, name := range slices.Sorted(maps.Keys(plain)) {
				if d, ok := compare(e, ct, name, plain[name], rd.Calls); ok {
					out = append(out, d)
				}
			}
			if d, ok := compare(e, ct, "iconv", iconv, rd.Calls); ok {
				out = append(out, d)
			}
		}
	}
	return out
}

// compare returns the disagreement of one server reading with the limiter's
// calls, if there is one.
func compare(e entry, ct, reader string, server reading, charged []mcp.Message) (disagreement, bool) {
	if !server.OK {
		return disagreement{}, false
	}
	missing := uncharged(charged, server.Calls)
	if missing == "" {
		return disagreement{}, false
	}
	return disagreement{label: e.label, contentType: ct, reader: reader, missing: missing,
		body: e.body, server: server.Calls, charged: charged}, true
}

// report fails the test with the disagreements: grouped by reader, header
// and what was missed (the method, or only the tool name), the shortest
// bodies of each group first, so that a new kind of disagreement shows even
// in a long run full of a known one, and with its smallest example.
func report(t *testing.T, ds []disagreement, extra string) {
	t.Helper()
	const perGroup = 2
	groups := map[string][]disagreement{}
	for _, d := range ds {
		missed := "tool name"
		if !slices.ContainsFunc(d.charged, func(m mcp.Message) bool { return strings.HasPrefix(d.missing, m.Method+" ") }) {
			missed = "method"
		}
		// Only iconv reads the charset: the other readers' disagreements
		// are the same whatever the header says.
		k := fmt.Sprintf("reader %s, %s", d.reader, missed)
		if d.reader == "iconv" {
			k = fmt.Sprintf("reader %s, Content-Type %q, %s", d.reader, d.contentType, missed)
		}
		groups[k] = append(groups[k], d)
	}
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]
		slices.SortStableFunc(g, func(a, b disagreement) int { return len(a.body) - len(b.body) })
		for _, d := range g[:min(perGroup, len(g))] {
			t.Errorf("%s%s", d, extra)
		}
		if len(g) > perGroup {
			t.Errorf("%s: %d disagreements in all, the %d shortest shown", k, len(g), perGroup)
		}
	}
}

func TestDifferentialCorpusEveryServerCallIsChargedOrRefused(t *testing.T) {
	r := needReaders(t)
	entries := corpus(t)
	ds := check(t, r, entries)
	t.Logf("%d corpus bodies × %d charsets", len(entries), len(charsets))
	report(t, ds, "")
}

// A reader that refused everything would make every other test here pass
// without checking anything: each must read the plain call, in every charset
// that can carry it.
func TestDifferentialEveryReaderReadsThePlainCall(t *testing.T) {
	r := needReaders(t)
	readings, err := r.readAll([][]byte{[]byte(searchCall)}, []string{"", "utf-8", "us-ascii"})
	if err != nil {
		t.Fatal(err)
	}
	got := readings[0]
	want := []call{{Method: "tools/call", Name: "search"}}
	all := maps.Clone(got.plain)
	for cs, rd := range got.iconv {
		all["iconv "+cs] = rd
	}
	if len(all) != 8 {
		t.Errorf("got %d readings, want 8 (5 that ignore the charset, iconv in 3 charsets)", len(all))
	}
	for name, rd := range all {
		if !rd.OK || !slices.Equal(rd.Calls, want) {
			t.Errorf("%s: got ok=%v calls %v (%s), want ok=true calls %v", name, rd.OK, rd.Calls, rd.Err, want)
		}
	}
}

func TestUnchargedNamesEveryCallTheLimiterDidNotCover(t *testing.T) {
	msg := func(method, name string) mcp.Message {
		return mcp.Message{Kind: mcp.KindRequest, Method: method, Name: name}
	}
	search := call{Method: "tools/call", Name: "search"}
	for _, tc := range []struct {
		name    string
		charged []mcp.Message
		server  []call
		covered bool
	}{
		{"the same call", []mcp.Message{msg("tools/call", "search")}, []call{search}, true},
		{"another tool", []mcp.Message{msg("tools/call", "free")}, []call{search}, false},
		{"another method", []mcp.Message{msg("tools/list", "search")}, []call{search}, false},
		{"charged once, run twice", []mcp.Message{msg("tools/call", "search")}, []call{search, search}, false},
		{"charged more than run", []mcp.Message{msg("tools/call", "search"), msg("tools/call", "free")}, []call{search}, true},
		{"a name matters for tools/call only", []mcp.Message{msg("prompts/get", "a")}, []call{{Method: "prompts/get", Name: "b"}}, true},
		{"an unnamed tools/call needs some tools/call", []mcp.Message{msg("tools/call", "free")}, []call{{Method: "tools/call"}}, true},
		{"an unnamed tools/call needs its own charge", []mcp.Message{msg("tools/call", "search")}, []call{search, {Method: "tools/call"}}, false},
		{"a name that is not text needs the method", []mcp.Message{msg("tools/call", "\ufffd")}, []call{{Method: "tools/call", Name: "\ufffd", IllFormed: true}}, true},
		{"a name holding U+FFFD needs the method (no policy names one)", []mcp.Message{msg("tools/call", "\ufffd\ufffd\ufffd")}, []call{{Method: "tools/call", Name: "\ufffd"}}, true},
		{"a method holding U+FFFD runs nothing a policy limits", nil, []call{{Method: "tools/call\ufffd", Name: "search"}}, true},
		{"an empty method runs nothing", nil, []call{{Method: "", Name: "search"}}, true},
		{"nothing charged", nil, []call{{Method: "ping"}}, false},
	} {
		if got := uncharged(tc.charged, tc.server) == ""; got != tc.covered {
			t.Errorf("%s: covered = %v, want %v (%s)", tc.name, got, tc.covered, uncharged(tc.charged, tc.server))
		}
	}
}
