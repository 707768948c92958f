// Package docs checks the repository's Markdown: every relative link in the
// README, docs/*.md and bench/README.md must name a file that exists and, when
// it carries an anchor into a Markdown file, a heading of that file. The
// reference moves between pages as it grows; a link left behind is found by
// `go test ./...`, not by a reader.
package docs

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

var (
	// An inline link's destination: "](dest)" or "](dest "title")". The text
	// before it is not needed, and may span lines.
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// A reference definition: "[label]: dest".
	refDef = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	// Code spans, whose brackets are not links.
	codeSpan = regexp.MustCompile("``[^`]*``|`[^`\n]*`")
	// An inline link inside a heading: its text counts, its destination not.
	headingLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	// An ATX heading.
	heading = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
)

// Problem is one link that does not resolve.
type Problem struct {
	File string // the Markdown file, relative to the root
	Link string // the destination as written
	Why  string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.File, p.Link, p.Why) }

// Check resolves every relative link of the Markdown files (paths relative to
// root) and returns those that do not resolve.
func Check(root string, files []string) ([]Problem, error) {
	anchors := map[string]map[string]bool{} // absolute .md path → its anchors
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := anchors[path]; ok {
			return a, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		a := Anchors(string(b))
		anchors[path] = a
		return a, nil
	}
	var problems []Problem
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		for _, dest := range Links(string(b)) {
			if why := resolve(root, f, dest, anchorsOf); why != "" {
				problems = append(problems, Problem{File: f, Link: dest, Why: why})
			}
		}
	}
	return problems, nil
}

// resolve says why dest, a link in file f, does not resolve ("" when it does).
func resolve(root, f, dest string, anchorsOf func(string) (map[string]bool, error)) string {
	u, err := url.Parse(dest)
	if err != nil {
		return "not a URL: " + err.Error()
	}
	if u.Scheme != "" || u.Host != "" {
		return "" // http(s), mailto: not this test's business
	}
	if strings.HasPrefix(u.Path, "/") {
		return "absolute path: GitHub resolves it against the site, not the repository"
	}
	target := filepath.Join(root, f)
	if u.Path != "" {
		target = filepath.Join(root, filepath.Dir(f), filepath.FromSlash(u.Path))
		rel, err := filepath.Rel(root, target)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "outside the repository"
		}
		if _, err := os.Stat(target); err != nil {
			return "no such file"
		}
	}
	if u.Fragment == "" || !strings.EqualFold(filepath.Ext(target), ".md") {
		return ""
	}
	a, err := anchorsOf(target)
	if err != nil {
		return err.Error()
	}
	if !a[u.Fragment] {
		return "no heading with anchor #" + u.Fragment
	}
	return ""
}

// Links returns the destinations of the inline links and reference
// definitions of a Markdown text, outside fenced code blocks and code spans.
func Links(md string) []string {
	text := codeSpan.ReplaceAllString(withoutFences(md), "")
	var out []string
	for _, m := range inlineLink.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	for _, m := range refDef.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// Anchors returns the anchors GitHub gives the headings of a Markdown text:
// the heading's text, lower-cased, without punctuation, spaces as hyphens; a
// repeated anchor gets "-1", "-2", ….
func Anchors(md string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, line := range strings.Split(withoutFences(md), "\n") {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := Slug(m[1])
		if n := seen[s]; n > 0 {
			out[s+"-"+strconv.Itoa(n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// Slug is GitHub's anchor for a heading's text: inline links reduced to their
// text, lower case, every character but letters, digits, marks, '_', '-' and
// spaces dropped, then each space a hyphen.
func Slug(h string) string {
	h = headingLink.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsMark(r), r == '_', r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// withoutFences blanks the lines of fenced code blocks (``` or ~~~), keeping
// the line count.
func withoutFences(md string) string {
	lines := strings.Split(md, "\n")
	fence := ""
	for i, line := range lines {
		t := strings.TrimLeft(line, " ")
		switch {
		case fence == "" && (strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~")):
			fence = t[:3]
			lines[i] = ""
		case fence != "":
			if strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]+" ") == "" {
				fence = ""
			}
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}
