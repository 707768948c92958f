package config

import (
	"slices"

	yaml "go.yaml.in/yaml/v3"
)

// UnreadableBody is what happens to a request body the limiter cannot read.
type UnreadableBody string

const (
	// UnreadableReject answers such a body itself (400, or 413/415 for its
	// encoding): a body the limiter cannot read may still be one a server runs.
	UnreadableReject UnreadableBody = "reject"
	// UnreadableContinue lets it through unlimited, for routes that carry
	// traffic other than MCP.
	UnreadableContinue UnreadableBody = "continue"
)

// Compression says which compressed request bodies the servers behind inflate,
// and so which the limiter inflates to read them.
type Compression struct {
	// Codings: "gzip", "deflate", or both. Never "br": a brotli stream declares
	// decoding tables before any data, so 64 KiB of it can cost 136 MB to read.
	Codings []string
	// MaxInflatedBytes bounds a body once inflated (default 4 MiB).
	MaxInflatedBytes int
	// MaxRatio bounds the inflated size as a multiple of the compressed one
	// (default 100).
	MaxRatio int
}

const (
	// DefaultMaxInflatedBytes is Envoy's shipped buffer limit: an inflated body
	// may be as large as a plain one.
	DefaultMaxInflatedBytes = 4 << 20
	// DefaultMaxRatio: JSON compresses 5 to 20 times; a bomb, 1000 and more.
	DefaultMaxRatio = 100
)

var compressionKeys = []string{"codings", "maxInflatedBytes", "maxRatio"}

// compression reads a requestCompression block.
func (w *walker) compression(n *yaml.Node, path string) *Compression {
	f, ok := w.fields(n, path, compressionKeys, nil)
	if !ok {
		return nil
	}
	c := &Compression{MaxInflatedBytes: DefaultMaxInflatedBytes, MaxRatio: DefaultMaxRatio}
	if x, ok := f["codings"]; ok {
		p := join(path, "codings")
		items, _ := w.list(x.val, p)
		for i, item := range items {
			if v, ok := w.enum(item, index(p, i), "gzip", "deflate"); ok {
				if slices.Contains(c.Codings, v) {
					w.addf(item, index(p, i), "duplicate coding %q", v)
					continue
				}
				c.Codings = append(c.Codings, v)
			}
		}
		if len(items) == 0 {
			w.addf(x.val, p, "must list gzip, deflate or both (leave requestCompression out to accept no compressed body)")
		}
	} else {
		w.missing(n, path, "codings", "which content-codings the servers behind inflate: gzip, deflate or both")
	}
	if x, ok := f["maxInflatedBytes"]; ok {
		if v, ok := w.integer(x.val, join(path, "maxInflatedBytes"), 1024, 64<<20); ok {
			c.MaxInflatedBytes = int(v)
		}
	}
	if x, ok := f["maxRatio"]; ok {
		if v, ok := w.integer(x.val, join(path, "maxRatio"), 2, 10000); ok {
			c.MaxRatio = int(v)
		}
	}
	return c
}

// bodyCommon reads unreadableBody and requestCompression into c.
func (w *walker) bodyCommon(f map[string]field, path string, c *common) {
	if x, ok := f["unreadableBody"]; ok {
		if v, ok := w.enum(x.val, join(path, "unreadableBody"), string(UnreadableReject), string(UnreadableContinue)); ok {
			c.unreadableBody = ptr(UnreadableBody(v))
		}
	}
	if x, ok := f["requestCompression"]; ok {
		if cmp := w.compression(x.val, join(path, "requestCompression")); cmp != nil {
			c.compression = &cmp
		}
	}
}
