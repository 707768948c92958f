package processor

import (
	"strconv"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// quotaAnswer is an allowed answer whose metadata carries the quota values
// (ratelimit, ratelimit-policy): different on every request, so it cannot be
// one of the shared answers. Codec writes its wire bytes directly (marshal).
type quotaAnswer struct {
	fixed *fixedAnswer
	quota limiter.Quota
	// out is the BufferSlice Codec returns, held here so that a send
	// allocates nothing beyond the quotaAnswer itself.
	out [1]mem.Buffer
}

// fixedAnswer is what a quotaAnswer shares with every answer of the same
// labels (answerKey), marshalled once.
type fixedAnswer struct {
	// cont is the continue ProcessingResponse without metadata.
	cont []byte
	// entries is the mcp_ratelimit Struct without the quota values: its map
	// entries (decision, method, tool, limit, plan), to which marshal appends
	// the two quota entries. Protobuf merges repeated map entries of
	// different keys, but not two occurrences of the namespace's entry, so
	// the namespace is written once, around all of them.
	entries []byte
}

// The tags marshal writes, each a field number and wire type 2 (length-
// delimited) in one byte.
const (
	tagDynamicMetadata = 8<<3 | 2 // ProcessingResponse.dynamic_metadata
	tagStructFields    = 1<<3 | 2 // Struct.fields, a map<string, Value>
	tagMapKey          = 1<<3 | 2
	tagMapValue        = 2<<3 | 2
	tagStringValue     = 3<<3 | 2 // Value.string_value
	tagStructValue     = 5<<3 | 2 // Value.struct_value
)

const (
	keyRateLimit       = "ratelimit"
	keyRateLimitPolicy = "ratelimit-policy"
)

// marshal writes q's ProcessingResponse into a buffer from pool, to which
// gRPC returns it when it has written it (mem.NewBuffer). Hand-written, not built as a
// Struct and marshalled, because it runs on every allowed request: see
// BenchmarkDecision and TestQuotaAnswerBytesAreTheProtoOfTheAnswer.
func (q *quotaAnswer) marshal(pool mem.BufferPool) mem.BufferSlice {
	// The ratelimit value is the fixed name, then ;r=<remaining>;t=<reset>.
	var scratch [48]byte
	suffix := strconv.AppendInt(append(scratch[:0], ";r="...), q.quota.Remaining, 10)
	suffix = strconv.AppendInt(append(suffix, ";t="...), q.quota.Reset, 10)
	h := q.quota.Header

	// Sizes from the inside out: every message is preceded by its length.
	inner := len(q.fixed.entries) +
		stringEntrySize(keyRateLimitPolicy, len(h.Policy)) +
		stringEntrySize(keyRateLimit, len(h.Name)+len(suffix))
	nsValue := 1 + protowire.SizeBytes(inner) // Value{struct_value}
	nsEntry := 1 + protowire.SizeBytes(len(MetadataNamespace)) + 1 + protowire.SizeBytes(nsValue)
	outer := 1 + protowire.SizeBytes(nsEntry) // Struct{fields: {mcp_ratelimit: ...}}
	total := len(q.fixed.cont) + 1 + protowire.SizeBytes(outer)

	buf := pool.Get(total)
	b := append((*buf)[:0], q.fixed.cont...)
	b = appendLen(append(b, tagDynamicMetadata), outer)
	b = appendLen(append(b, tagStructFields), nsEntry)
	b = appendLen(append(b, tagMapKey), len(MetadataNamespace))
	b = append(b, MetadataNamespace...)
	b = appendLen(append(b, tagMapValue), nsValue)
	b = appendLen(append(b, tagStructValue), inner)
	b = append(b, q.fixed.entries...)
	b = appendStringEntry(b, keyRateLimitPolicy, h.Policy, nil)
	b = appendStringEntry(b, keyRateLimit, h.Name, suffix)
	*buf = b
	q.out[0] = mem.NewBuffer(buf, pool)
	return q.out[:]
}

// stringEntrySize is the size of a Struct.fields entry, field tag included,
// mapping key to a string Value of n bytes.
func stringEntrySize(key string, n int) int {
	value := 1 + protowire.SizeBytes(n)
	entry := 1 + protowire.SizeBytes(len(key)) + 1 + protowire.SizeBytes(value)
	return 1 + protowire.SizeBytes(entry)
}

// appendStringEntry appends a Struct.fields entry mapping key to the string
// Value s followed by more.
func appendStringEntry(b []byte, key, s string, more []byte) []byte {
	n := len(s) + len(more)
	value := 1 + protowire.SizeBytes(n)
	b = appendLen(append(b, tagStructFields), 1+protowire.SizeBytes(len(key))+1+protowire.SizeBytes(value))
	b = appendLen(append(b, tagMapKey), len(key))
	b = append(b, key...)
	b = appendLen(append(b, tagMapValue), value)
	b = appendLen(append(b, tagStringValue), n)
	b = append(b, s...)
	return append(b, more...)
}

// appendLen appends a length as a varint; most fit in one byte.
func appendLen(b []byte, n int) []byte {
	if n < 0x80 {
		return append(b, byte(n))
	}
	return protowire.AppendVarint(b, uint64(n))
}

// wireBuffers holds the buffers of quota answers (Codec).
var wireBuffers = &wirePool{}

// wirePool is a mem.BufferPool of buffers of at least minWireBuffer bytes:
// more than gRPC's pooling threshold (1 KiB), below which mem.NewBuffer
// would not give them back. Unlike gRPC's own pools it does not clear a
// buffer on Get: marshal writes every byte it sends.
type wirePool struct{ p sync.Pool }

const (
	minWireBuffer = 2 << 10
	// maxWireBuffer bounds what the pool keeps: an answer with very long
	// policy names is rare, and its buffer is left to the GC.
	maxWireBuffer = 64 << 10
)

func (w *wirePool) Get(n int) *[]byte {
	if b, ok := w.p.Get().(*[]byte); ok {
		if cap(*b) >= n {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n, max(n, minWireBuffer))
	return &b
}

func (w *wirePool) Put(b *[]byte) {
	if c := cap(*b); c >= minWireBuffer && c <= maxWireBuffer {
		w.p.Put(b)
	}
}
