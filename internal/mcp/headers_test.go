package mcp

import (
	"strings"
	"testing"
)

func TestSFString(t *testing.T) {
	if got, want := SFString(`tool:a"b\é`), `"tool:a\"b\\__"`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if strings.ContainsAny(SFString("\n"), "\n") {
		t.Error("control characters must not reach a header")
	}
}
