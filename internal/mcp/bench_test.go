package mcp

import (
	"encoding/json"
	"strings"
	"testing"
)

// Run: go test -run=^$ -bench=. -benchmem ./internal/mcp/
// Each Parse benchmark has a StdlibMap twin decoding the same body with
// encoding/json into maps, the baseline to quote Parse's cost against.

var benchBodies = []struct {
	name string
	body []byte
}{
	{"SmallToolsCall", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"query":"rate limits","limit":10}}}`)},
	{"ToolsCall100KB", toolsCall(100 << 10)},
	{"Batch10", tenBatch()},
}

func tenBatch() []byte {
	parts := make([]string, 10)
	for i := range parts {
		parts[i] = `{"jsonrpc":"2.0","id":` + string(rune('0'+i)) + `,"method":"tools/call","params":{"name":"search","arguments":{"query":"rate limits","limit":10}}}`
	}
	return []byte("[" + strings.Join(parts, ",") + "]")
}

func BenchmarkParse(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(bb.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStdlibMap(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if bb.body[0] == '[' {
					var v []map[string]any
					err = json.Unmarshal(bb.body, &v)
				} else {
					var v map[string]any
					err = json.Unmarshal(bb.body, &v)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRejectionBody(b *testing.B) {
	body, err := Parse(benchBodies[0].body)
	if err != nil {
		b.Fatal(err)
	}
	r := Rejection{Code: -32029, Message: DefaultMessage, RetryAfterSeconds: 20, RetryAfterMs: 19500, Limit: "tool:search", Scope: "perUser"}
	b.ReportAllocs()
	for b.Loop() {
		_ = RejectionBody(body, r)
	}
}
