package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that it returns either a
// policy or problems, never both nor neither.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if (p == nil) == (err == nil) {
			t.Fatalf("Parse(%q) = %v, %v; want exactly one of policy and error", data, p, err)
		}
		if err != nil && len(Problems(err)) == 0 {
			t.Fatalf("Parse(%q): error without problems", data)
		}
	})
}
