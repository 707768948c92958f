package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// walker reads typed values out of a yaml.Node tree, recording a Problem for
// everything that does not fit instead of stopping at the first one.
type walker struct {
	problems
	// explained records, per map node, the keys whose absence was already
	// explained by a misspelled key ("did you mean") or a merge key, so that a
	// "missing" problem is not reported on top. "" stands for every key.
	explained map[*yaml.Node]map[string]bool
}

func (w *walker) explain(n *yaml.Node, key string) {
	if w.explained == nil {
		w.explained = map[*yaml.Node]map[string]bool{}
	}
	if w.explained[n] == nil {
		w.explained[n] = map[string]bool{}
	}
	w.explained[n][key] = true
}

// missing reports that map n at parent lacks the required key, unless a typo
// or a merge key already explains it.
func (w *walker) missing(n *yaml.Node, parent, key, format string, args ...any) {
	if e := w.explained[n]; e[key] || e[""] {
		return
	}
	w.addf(n, join(parent, key), "missing: "+format, args...)
}

func (w *walker) addf(n *yaml.Node, path, format string, args ...any) {
	line, col := 0, 0
	if n != nil {
		line, col = n.Line, n.Column
	}
	w.add(line, col, path, format, args...)
}

// deref follows aliases, so anchors can share values (e.g. a bucket) across the
// file. The schema is not recursive, so following aliases cannot blow up.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// describe names a node's value for "got ..." in messages: scalars as written
// (strings quoted, so `"10"` reads as the string it is), collections by kind.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return strconv.Quote(n.Value)
		case "!!null":
			return "null"
		default:
			return n.Value
		}
	}
	return "an unsupported YAML node"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// field is one key of a YAML map.
type field struct {
	key *yaml.Node // the key, for its line
	val *yaml.Node // the value, aliases followed
}

// fields reads a map with the given allowed keys. Unknown keys (with a
// suggestion for near misses), duplicate keys, non-string keys and merge keys
// are problems; so is a value that is not a map. hints gives a specific message
// for a known wrong key (e.g. "redis" inside a servers entry). ok is false when n
// is not a map.
func (w *walker) fields(n *yaml.Node, path string, allowed []string, hints map[string]string) (map[string]field, bool) {
	if n.Kind != yaml.MappingNode {
		w.addf(n, path, "must be a map, got %s", describe(n))
		return nil, false
	}
	out := make(map[string]field, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			w.addf(k, path, "map keys must be field names, got %s", describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			// yaml.v3 resolves merge keys only when decoding into Go values;
			// supporting them by hand is not worth the surprise of half-merged maps.
			w.addf(k, join(path, k.Value), "merge keys (<<) are not supported; repeat the fields, or share a whole value with an anchor (&name, *name)")
			w.explain(n, "")
			continue
		}
		name := k.Value
		if first, dup := out[name]; dup {
			w.addf(k, join(path, name), "duplicate key (first at line %d)", first.key.Line)
			continue
		}
		if !slices.Contains(allowed, name) {
			switch {
			case hints[name] != "":
				w.addf(k, join(path, name), "%s", hints[name])
			case suggest(name, allowed) != "":
				w.addf(k, join(path, name), "unknown field (did you mean %q?)", suggest(name, allowed))
				w.explain(n, suggest(name, allowed))
			default:
				w.addf(k, join(path, name), "unknown field; expected one of %s", strings.Join(allowed, ", "))
			}
			continue
		}
		out[name] = field{key: k, val: v}
	}
	return out, true
}

// suggest returns the allowed key closest to name when it is a plausible typo:
// same letters in another case, or at most two edits away (one for short keys).
func suggest(name string, allowed []string) string {
	best, bestDist := "", 0
	for _, a := range allowed {
		if strings.EqualFold(a, name) {
			return a
		}
		d := editDistance(strings.ToLower(name), strings.ToLower(a))
		limit := 2
		if len(a) <= 4 {
			limit = 1
		}
		if d <= limit && (best == "" || d < bestDist) {
			best, bestDist = a, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes; keys are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// str reads a string. Only YAML strings are accepted: `server: 2024` is an
// integer, and silently turning it into "2024" would hide typos such as
// `header: true`.
func (w *walker) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		w.addf(n, path, "must be a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// boolean reads a real YAML boolean (true/false); "yes", "on" or a quoted "true"
// are strings in YAML 1.2 and are rejected rather than guessed at.
func (w *walker) boolean(n *yaml.Node, path string) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		w.addf(n, path, "must be true or false, got %s", describe(n))
		return false, false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		w.addf(n, path, "must be true or false, got %s", describe(n))
		return false, false
	}
	return b, true
}

// integer reads a decimal integer in [lo, hi]. Underscores are allowed as digit
// separators (1_000); octal and hexadecimal forms are not, because YAML reads
// "010" as 8 and nobody writing a token count means that.
func (w *walker) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	want := fmt.Sprintf("an integer from %d to %d", lo, hi)
	switch {
	case lo == 1 && hi >= 1_000_000_000:
		want = fmt.Sprintf("an integer >= 1 and <= %d", hi)
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		w.addf(n, path, "must be %s, got %s", want, describe(n))
		return 0, false
	}
	digits := strings.ReplaceAll(n.Value, "_", "")
	unsigned := strings.TrimLeft(digits, "+-")
	if len(unsigned) > 1 && unsigned[0] == '0' {
		w.addf(n, path, "must be %s written in decimal, got %s", want, n.Value)
		return 0, false
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v < lo || v > hi {
		w.addf(n, path, "must be %s, got %s", want, n.Value)
		return 0, false
	}
	return v, true
}

// duration reads a Go duration string (time.ParseDuration) in [lo, hi].
func (w *walker) duration(n *yaml.Node, path string, lo, hi time.Duration, hiText string) (time.Duration, bool) {
	const want = `must be a Go duration such as "30s", "1m" or "24h"`
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
			w.addf(n, path, "%s, got %s (a unit is required)", want, n.Value)
		} else {
			w.addf(n, path, "%s, got %s", want, describe(n))
		}
		return 0, false
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		if strings.HasSuffix(n.Value, "d") {
			w.addf(n, path, "%s, got %q (Go durations have no day unit; write hours, e.g. \"720h\" for 30 days)", want, n.Value)
		} else {
			w.addf(n, path, "%s, got %q", want, n.Value)
		}
		return 0, false
	}
	if d < lo || d > hi {
		w.addf(n, path, "must be from %s to %s, got %q", lo, hiText, n.Value)
		return 0, false
	}
	return d, true
}

// enum reads a string that must be one of allowed.
func (w *walker) enum(n *yaml.Node, path string, allowed ...string) (string, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && slices.Contains(allowed, n.Value) {
		return n.Value, true
	}
	w.addf(n, path, "must be one of %s; got %s", strings.Join(allowed, ", "), describe(n))
	return "", false
}

// list reads a sequence; ok is false when n is not one.
func (w *walker) list(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		w.addf(n, path, "must be a list, got %s", describe(n))
		return nil, false
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = deref(c)
	}
	return out, true
}
