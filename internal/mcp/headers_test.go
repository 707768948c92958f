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

func TestPolicyHeader(t *testing.T) {
	one := Quota{Policy: "user-tool:search", Max: 10, Window: 60, Remaining: 0, Reset: 6}
	single, _ := RateLimitHeaders(one)
	if got := PolicyHeader(one); got != single {
		t.Errorf("one quota: got %s, want RateLimitHeaders' %s", got, single)
	}
	two := Quota{Policy: "user-tool#w1:search", Max: 500, Window: 86400}
	if got, want := PolicyHeader(one, two), `"user-tool:search";q=10;w=60, "user-tool#w1:search";q=500;w=86400`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
