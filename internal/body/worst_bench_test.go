package body

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

// worstBodies are the most expensive bodies of Envoy's shipped 4 MiB buffer
// for each way of reading: the flood a client can send at no cost to itself.
func worstBodies() []struct {
	name, coding string
	body         []byte
} {
	const size = 4 << 20
	head := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"pad":`
	plain := head + `"` + strings.Repeat("a", size-len(head)-10) + `"}}}`
	escapes := head + `"` + strings.Repeat(`\u00e9`, (size-len(head)-10)/6) + `"}}}`
	depth := (size - len(head) - 10) / 2
	nested := head + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}}}`
	wide := encodeUTF16LE(head + `"` + strings.Repeat("a", size/2-len(head)-10) + `"}}}`)
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	w.Write([]byte(plain))
	w.Close()
	return []struct {
		name, coding string
		body         []byte
	}{
		{"Plain4MiB", "", []byte(plain)},
		{"Escapes4MiB", "", []byte(escapes)},
		{"Nested2M", "", []byte(nested)},
		{"UTF16LE4MiB", "", wide},
		{"Gzip4MiB", "gzip", gz.Bytes()},
	}
}

// Run: go test -run='^$' -bench=BenchmarkReadWorst -benchmem ./internal/body/
func BenchmarkReadWorst(b *testing.B) {
	opts := Options{Codings: []string{"gzip"}, MaxRatio: 10000}
	for _, w := range worstBodies() {
		b.Run(w.name, func(b *testing.B) {
			b.SetBytes(int64(len(w.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Read(w.body, w.coding, "", opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
