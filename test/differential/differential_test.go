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
// tools/call without a name (or with one that is not text, which names no
// tool a policy can configure) runs no tool, so it needs only some tools/call
// charged: in all, a method must be charged as often as the reading runs it.
// A call with an empty method, or one that is not text, runs nothing.
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
		if c.Method == "" || (c.IllFormed && c.Method != "tools/call") {
			continue
		}
		needAll[c.Method]++
		if c.Method == "tools/call" && (c.Name == "" || c.IllFormed) {
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

// report fails the test with the disagreements, at most a few per body and a
// few dozen in all, so that one systematic difference stays readable.
func report(t *testing.T, ds []disagreement, extra string) {
	t.Helper()
	const maxPerBody, maxAll = 3, 40
	perBody := map[string]int{}
	shown := 0
	for _, d := range ds {
		perBody[d.label]++
		if perBody[d.label] > maxPerBody || shown == maxAll {
			continue
		}
		shown++
		t.Errorf("%s%s", d, extra)
	}
	if len(ds) > shown {
		t.Errorf("%d disagreements in all (%d bodies), %d shown", len(ds), len(perBody), shown)
	}
}

func TestDifferentialCorpusEveryServerCallIsChargedOrRefused(t *testing.T) {
	r := needReaders(t)
	entries := corpus(t)
	ds := check(t, r, entries)
	t.Logf("%d corpus bodies × %d charsets", len(entries), len(charsets))
	report(t, ds, "")
}
