package docs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// root is the repository, two levels up from this package.
const root = "../.."

// documents lists the Markdown files whose links must resolve: the README,
// every page of docs/, and bench/README.md.
func documents(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"README.md", filepath.Join("bench", "README.md")}
	for _, p := range pages {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	if len(pages) == 0 {
		t.Fatal("no docs/*.md found: is the test running from test/docs?")
	}
	return files
}

func TestEveryRelativeLinkResolves(t *testing.T) {
	problems, err := Check(root, documents(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestCheckFindsBrokenLinks makes sure the check can fail: a missing file, a
// missing heading, a link out of the repository and an absolute path are each
// reported; good links, external ones and links in code are not.
func TestCheckFindsBrokenLinks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/page.md", "# Page\n\n## The `toolResult` format\n\n## Again\n\n## Again\n")
	write("examples/policy.yaml", "server: x\n")
	write("README.md", strings.Join([]string{
		"# Readme",
		"[ok](docs/page.md) [ok](docs/page.md#the-toolresult-format) [ok](docs/page.md#again-1)",
		"[ok](#readme) [ok](examples/policy.yaml) [ok](https://example.com/x.md#nowhere)",
		"[a link whose text",
		"spans two lines](docs/page.md#page)",
		"`[in code](missing.md)`",
		"```",
		"[in a fence](missing.md)",
		"```",
		"[missing file](docs/missing.md)",
		"[missing anchor](docs/page.md#nowhere)",
		"[missing anchor here](#nowhere)",
		"[outside](../elsewhere.md)",
		"[absolute](/docs/page.md)",
		"",
	}, "\n"))

	problems, err := Check(dir, []string{"README.md"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.Link)
	}
	want := []string{"docs/missing.md", "docs/page.md#nowhere", "#nowhere", "../elsewhere.md", "/docs/page.md"}
	if !slices.Equal(got, want) {
		t.Errorf("got problems %q, want %q", got, want)
	}
}

func TestSlug(t *testing.T) {
	for _, c := range []struct{ heading, want string }{
		{"Quick start", "quick-start"},
		{"Which address, which header, to trust", "which-address-which-header-to-trust"},
		{"The shipped Envoy configuration (`envoy/envoy.yaml`)", "the-shipped-envoy-configuration-envoyenvoyyaml"},
		{"Identity from a JWT (`jwt_authn`)", "identity-from-a-jwt-jwt_authn"},
		{"`unreadableBody: continue`", "unreadablebody-continue"},
		{"See [the policy](policy.md)", "see-the-policy"},
		{"Reading bodies: cost and bounds", "reading-bodies-cost-and-bounds"},
	} {
		if got := Slug(c.heading); got != c.want {
			t.Errorf("Slug(%q) = %q, want %q", c.heading, got, c.want)
		}
	}
}
