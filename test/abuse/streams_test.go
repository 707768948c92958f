package abuse

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// attackFor is how long each flood lasts at most; each also stops at its count.
const attackFor = 3 * time.Second

// Memory bounds, one per attack, on the peak resident set of extproc. An idle
// extproc holds about 20 MiB here; the bounds leave room for what an honest
// load of the same shape costs and fail when memory grows with what the
// attacker sends rather than with what the server chose to accept.
const (
	// rapidResetRSSBound: canceled streams must be freed as fast as they come;
	// the load is 20,000 tiny streams.
	rapidResetRSSBound = 128 << 20
	// continuationRSSBound: a header block that never ends must be cut off at
	// a header list limit near what Envoy sends (a few hundred bytes), so
	// that the four connections flooding at once pin next to nothing.
	continuationRSSBound = 96 << 20
	// bigHeadersRSSBound: 100 requests of 1 MiB of headers each, kept open.
	// Envoy sends ext_proc a handful of small headers, so a server that held
	// them all (100 MiB of attacker bytes) has no limit worth the name.
	bigHeadersRSSBound = 96 << 20
	// controlFloodRSSBound: SETTINGS and PING frames carry no state to keep.
	controlFloodRSSBound = 96 << 20
	// hugeMessageRSSBound: a message announced past the server's message limit
	// must be refused from its 5-byte prefix, before any of it is kept.
	hugeMessageRSSBound = 96 << 20
	// partialMessagesRSSBound: 50 streams each 1 byte short of a 4 MiB message
	// are 200 MiB of attacker bytes the server reads before any decision; an
	// Envoy never has that many bodies of that size pending on one replica.
	partialMessagesRSSBound = 256 << 20
	// inflightBudget is the --grpc-max-inflight-bytes TestPartialMessagesPastBudget
	// runs with: small, so that its attack passes it many times over.
	inflightBudget = 64 << 20
	// pastBudgetRSSBound: the budget, what the idle process uses (about
	// 20 MiB), and as much again as the budget for the buffers freed by
	// canceled streams before the collector reclaims them, with a margin.
	pastBudgetRSSBound = 192 << 20
	// smallFramesRSSBound: TestSmallFramesPastBudget's extproc sheds once its
	// live heap passes the budget plus 64 MiB, 128 MiB, and runs under a Go
	// memory limit of the budget plus 128 MiB, 192 MiB, which bounds its heap
	// with the garbage of shed streams; the bound adds what the process holds
	// outside the Go runtime's count and a margin.
	smallFramesRSSBound = 240 << 20
)

// smallFramesFor is how long TestSmallFramesPastBudget sends: long enough
// for 1-byte frames to pass the budget several times over.
const smallFramesFor = 8 * time.Second

// TestRapidReset opens Process streams, each with a small message, and resets
// each at once (CVE-2023-44487): the server must not keep running handlers
// for streams the client has canceled.
func TestRapidReset(t *testing.T) {
	const conns, streamsPerConn = 4, 5000
	e := startExtproc(t)
	block := requestBlock()
	var opened atomic.Int64
	var fc *floodConns
	underAttack(t, e, rapidResetRSSBound, func() {
		deadline := time.Now().Add(attackFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			for i := range streamsPerConn {
				if time.Now().After(deadline) {
					break
				}
				id := uint32(2*i + 1)
				if h.writeHeaders(id, block, false) != nil || h.fr.WriteData(id, false, headersMessage) != nil ||
					h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return true
				}
				// An attacker batches; a flush every 16 streams still keeps
				// the server reading.
				if i%16 == 15 && h.flush() != nil {
					return true
				}
				opened.Add(1)
			}
			catchUp(t, h)
			return false
		})
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("opened and reset %d streams", opened.Load())
}

// catchUpWithin bounds the wait for the server to read what an attack wrote
// ahead of it (socket buffers hold megabytes); it only catches a hang.
const catchUpWithin = 10 * time.Second

// catchUp waits until the server has read everything written on h, so that
// the attack's cost lands while the probe runs, and logs how long it took.
func catchUp(t *testing.T, h *h2conn) {
	t.Helper()
	start := time.Now()
	if err := h.barrier(start.Add(catchUpWithin)); err != nil {
		t.Logf("server catching up: %v after %v", err, time.Since(start).Round(time.Millisecond))
		return
	}
	t.Logf("server caught up %v after the attack's last frame", time.Since(start).Round(time.Millisecond))
}

// TestContinuationFlood sends a header block that never ends: HEADERS without
// END_HEADERS, then CONTINUATION frames for as long as the server reads them
// (CVE-2023-45288). The server must give up at its header list limit.
func TestContinuationFlood(t *testing.T) {
	const conns = 4
	const perConnMax = 64 << 20 // bytes of CONTINUATION per connection at most
	e := startExtproc(t)
	// Whole fields, so that every CONTINUATION carries the same fragment and
	// the block stays valid HPACK however long it grows: the server must stop
	// it for its size, not for a decoding error.
	fragment := requestBlockFields(padFields(12 << 10))
	var sent atomic.Int64
	var fc *floodConns
	underAttack(t, e, continuationRSSBound, func() {
		deadline := time.Now().Add(attackFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: requestBlock()}) != nil {
				return true
			}
			for n := 0; n < perConnMax; n += len(fragment) {
				if h.closed() {
					return true
				}
				if time.Now().After(deadline) {
					return false
				}
				if h.fr.WriteContinuation(1, false, fragment) != nil {
					return true
				}
				sent.Add(int64(len(fragment)))
			}
			return false
		})
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("sent %s of CONTINUATION in all, %s a connection on average", mib(sent.Load()), mib(sent.Load()/int64(max(1, len(fc.all)))))
}

// requestBlockFields is the HPACK block of fields alone, as literals never
// indexed, so that it may be repeated.
func requestBlockFields(fields []hpack.HeaderField) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range fields {
		f.Sensitive = true
		if err := enc.WriteField(f); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// TestOversizedHeaders sends complete Process requests carrying 1 MiB of
// headers each and keeps the streams open. Envoy's requests to ext_proc carry
// a few hundred bytes of headers; the server must refuse these, not keep them.
func TestOversizedHeaders(t *testing.T) {
	const conns, streamsPerConn = 4, 25
	e := startExtproc(t)
	block := requestBlock(padFields(1 << 20)...)
	var sent atomic.Int64
	var fc *floodConns
	underAttack(t, e, bigHeadersRSSBound, func() {
		deadline := time.Now().Add(attackFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			for i := range streamsPerConn {
				if time.Now().After(deadline) {
					return false
				}
				if h.writeHeaders(uint32(2*i+1), block, false) != nil || h.flush() != nil {
					return true
				}
				sent.Add(1)
			}
			return false
		})
		// Held open while the probe runs: what the server kept shows now.
		holdOpen(time.Second)
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("sent %d requests, each a header list of 1 MiB (%s on the wire, HPACK's Huffman coding)", sent.Load(), mib(int64(len(block))))
}

// holdOpen keeps an attack's connections open for d while the probe goes on
// sampling RSS, so that what they pinned is measured before they are closed.
// d is an exposure window, not a wait for anything to become ready.
func holdOpen(d time.Duration) { time.Sleep(d) }

// TestSettingsFlood sends SETTINGS frames, each changing the initial window
// (work for the server: every stream's window moves), 5,000 a second on a
// connection that reads the acknowledgements and one that never reads them.
func TestSettingsFlood(t *testing.T) {
	e := startExtproc(t)
	var fc *floodConns
	var sent atomic.Int64
	underAttack(t, e, controlFloodRSSBound, func() {
		fc = paced(t, e.GRPCAddr, &sent, func(h *h2conn, i int) error {
			return h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(65535 + i%2)})
		})
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("sent %d SETTINGS frames", sent.Load())
}

// TestPingFlood sends PING frames, 5,000 a second, on a connection that reads
// the acknowledgements and one that never reads them.
func TestPingFlood(t *testing.T) {
	e := startExtproc(t)
	var fc *floodConns
	var sent atomic.Int64
	underAttack(t, e, controlFloodRSSBound, func() {
		fc = paced(t, e.GRPCAddr, &sent, func(h *h2conn, i int) error {
			return h.fr.WritePing(false, [8]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		})
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("sent %d PING frames", sent.Load())
}

// paced writes frames with write at controlFloodRate for attackFor on two
// connections, one reading what the server answers and one never reading it,
// dialing again when the server closes one. It counts frames written in sent.
func paced(t *testing.T, addr string, sent *atomic.Int64, write func(h *h2conn, i int) error) *floodConns {
	t.Helper()
	const controlFloodRate = 5000 // frames per second per connection
	const tick = 10 * time.Millisecond
	const perTick = controlFloodRate * int(tick) / int(time.Second)
	deadline := time.Now().Add(attackFor)
	var wg sync.WaitGroup
	all := &floodConns{}
	for _, read := range []bool{true, false} {
		wg.Go(func() {
			fc := flood(t, addr, 1, read, deadline, func(h *h2conn) bool {
				tk := time.NewTicker(tick)
				defer tk.Stop()
				for i := 0; time.Now().Before(deadline); {
					for range perTick {
						if write(h, i) != nil {
							return true
						}
						i++
					}
					if h.flush() != nil {
						return true
					}
					sent.Add(int64(perTick))
					<-tk.C
				}
				return false
			})
			all.mu.Lock()
			all.all = append(all.all, fc.all...)
			all.dials = append(all.dials, fc.dials...)
			all.mu.Unlock()
		})
	}
	wg.Wait()
	return all
}
