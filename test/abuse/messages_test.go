package abuse

import (
	"encoding/binary"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHugeMessage opens Process streams whose first message announces 4 GiB
// (gRPC length prefix 0xFFFFFFFF) and then trickles bytes. The server's
// message limit is far below that: it must end each stream from the prefix
// alone. A stream it ends is replaced by a new one, as an attacker would.
func TestHugeMessage(t *testing.T) {
	const conns, openPerConn, maxStreamsPerConn = 2, 10, 2000
	const tick, trickle = 10 * time.Millisecond, 64 // bytes per stream per tick
	e := startExtproc(t)
	block := requestBlock()
	prefix := []byte{0, 0xff, 0xff, 0xff, 0xff}
	chunk := make([]byte, trickle)
	var announced, trickled atomic.Int64
	var fc *floodConns
	underAttack(t, e, hugeMessageRSSBound, func() {
		deadline := time.Now().Add(attackFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			next := uint32(1)
			open := func() error {
				if next > 2*maxStreamsPerConn {
					return errStreamCount
				}
				id := next
				next += 2
				announced.Add(1)
				if err := h.writeHeaders(id, block, false); err != nil {
					return err
				}
				return h.fr.WriteData(id, false, prefix)
			}
			var streams []uint32
			for range openPerConn {
				streams = append(streams, next)
				if open() != nil {
					return true
				}
			}
			tk := time.NewTicker(tick)
			defer tk.Stop()
			for time.Now().Before(deadline) {
				for i, id := range streams {
					if h.streamEnded(id) {
						streams[i] = next
						if err := open(); err != nil {
							return !errors.Is(err, errStreamCount)
						}
						continue
					}
					if h.fr.WriteData(id, false, chunk) != nil {
						return true
					}
					trickled.Add(trickle)
				}
				if h.flush() != nil {
					return true
				}
				<-tk.C
			}
			return false
		})
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("announced %d messages of 4 GiB; trickled %s into them", announced.Load(), mib(trickled.Load()))
}

// errStreamCount: an attack opened as many streams as it was allowed.
var errStreamCount = errors.New("stream count reached")

// partialFor bounds TestPartialMessages, whose 200 MiB upload takes a couple
// of seconds here; it only stops a server that stopped reading from holding
// the test.
const partialFor = 10 * time.Second

// TestPartialMessages opens 50 Process streams and sends each a message
// announcing 4 MiB, all but its last byte, which never comes. Nothing is
// decided before a message is whole, so whatever the server holds for them
// is memory an attacker pins at the cost of the upload.
func TestPartialMessages(t *testing.T) {
	const conns, streamsPerConn = 5, 10
	const msgLen = 4 << 20
	e := startExtproc(t)
	block := requestBlock()
	payload := make([]byte, 5+msgLen-1)
	binary.BigEndian.PutUint32(payload[1:], msgLen)
	var held, sent atomic.Int64
	var fc *floodConns
	underAttack(t, e, partialMessagesRSSBound, func() {
		deadline := time.Now().Add(partialFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			for i := range streamsPerConn {
				id := uint32(2*i + 1)
				if h.writeHeaders(id, block, false) != nil {
					return false
				}
				n, err := h.writeDataFlow(id, payload, deadline)
				sent.Add(int64(n))
				if err != nil {
					t.Logf("stream %d: after %s: %v", id, mib(int64(n)), err)
					return false
				}
				held.Add(1)
			}
			return false
		})
		// Held open while the probe runs: what the server kept shows now.
		holdOpen(time.Second)
		fc.report(t)
		fc.closeAll()
	})
	t.Logf("%d streams hold a message 1 byte short of 4 MiB; %s sent in all", held.Load(), mib(sent.Load()))
}

// TestPartialMessagesPastBudget is TestPartialMessages against a process
// whose budget for unfinished messages (--grpc-max-inflight-bytes) is 64 MiB:
// 8 connections each send 16 messages 1 byte short of 4 MiB, 512 MiB in all,
// and replace every stream the server ends, up to 32 per connection. The
// server must cancel the streams that have waited longest for a whole
// message (grpc-go ends them with grpc-status CANCELLED), keep what it holds
// under the budget and its RSS near it, and keep answering the probe, whose
// streams complete a message every few milliseconds and are never canceled
// (underAttack fails on any failed probe).
func TestPartialMessagesPastBudget(t *testing.T) {
	const conns, streamsPerConn, maxStreamsPerConn = 8, 16, 32
	const msgLen = 4 << 20
	e := startExtproc(t, "--grpc-max-inflight-bytes", strconv.Itoa(inflightBudget))
	block := requestBlock()
	payload := make([]byte, 5+msgLen-1)
	binary.BigEndian.PutUint32(payload[1:], msgLen)
	var sent atomic.Int64
	var mu sync.Mutex
	sentWhole := map[*h2conn][]uint32{} // streams whose message was sent, all but its last byte
	var fc *floodConns
	underAttack(t, e, pastBudgetRSSBound, func() {
		deadline := time.Now().Add(partialFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			for i, whole := 0, 0; i < maxStreamsPerConn && whole < streamsPerConn; i++ {
				id := uint32(2*i + 1)
				if h.writeHeaders(id, block, false) != nil {
					return false
				}
				n, err := h.writeDataFlow(id, payload, deadline)
				sent.Add(int64(n))
				switch {
				case errors.Is(err, errStreamEnded):
				case err != nil:
					t.Logf("stream %d: after %s: %v", id, mib(int64(n)), err)
					return false
				default:
					whole++
					mu.Lock()
					sentWhole[h] = append(sentWhole[h], id)
					mu.Unlock()
				}
			}
			return false
		})
		// Held open while the probe runs: what the server kept shows now.
		holdOpen(time.Second)
		fc.report(t)
	})
	var ended, held int
	for _, h := range fc.all {
		ended += h.trailerStatuses()["1"] // CANCELLED
		for _, id := range sentWhole[h] {
			if !h.streamEnded(id) {
				held++
			}
		}
	}
	fc.closeAll()
	t.Logf("%s sent; %d streams ended by the server with CANCELLED; %d still hold a message 1 byte short of 4 MiB",
		mib(sent.Load()), ended, held)
	if ended == 0 {
		t.Errorf("no stream ended with CANCELLED; want streams canceled past the budget")
	}
	if int64(held)*msgLen > inflightBudget {
		t.Errorf("the server still holds %d messages of 4 MiB, %s; want at most the budget, %s",
			held, mib(int64(held)*msgLen), mib(inflightBudget))
	}
}

// TestSmallFramesPastBudget sends messages in DATA frames of 1 byte, which
// grpc-go reads outside its buffer pool, so the budget's count never sees
// them: 4 connections × 16 streams, each announcing a 4 MiB message and
// sending it a byte a frame, a stream the server ends replaced by a new one.
// The server's heap watcher must shed the streams that have waited longest
// for a whole message (grpc-go ends them with grpc-status CANCELLED) and keep
// RSS near the budget plus its headroom, while the probe, whose streams
// complete a message every few milliseconds, keeps being answered
// (underAttack fails on any failed probe).
func TestSmallFramesPastBudget(t *testing.T) {
	const conns, streamsPerConn, maxStreamsPerConn = 4, 16, 512
	const msgLen = 4 << 20
	const perRound = 256 // bytes, so frames, written on a stream before the next
	e := startExtproc(t, "--grpc-max-inflight-bytes", strconv.Itoa(inflightBudget))
	block := requestBlock()
	prefix := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(prefix[1:], msgLen)
	chunk := make([]byte, perRound)
	var frames, opened atomic.Int64
	var fc *floodConns
	underAttack(t, e, smallFramesRSSBound, func() {
		deadline := time.Now().Add(smallFramesFor)
		fc = flood(t, e.GRPCAddr, conns, true, deadline, func(h *h2conn) bool {
			next := uint32(1)
			open := func() (uint32, error) {
				if next > 2*maxStreamsPerConn {
					return 0, errStreamCount
				}
				id := next
				next += 2
				opened.Add(1)
				if err := h.writeHeaders(id, block, false); err != nil {
					return 0, err
				}
				return id, h.fr.WriteData(id, false, prefix)
			}
			type stream struct {
				id   uint32
				sent int
			}
			var streams []stream
			for range streamsPerConn {
				id, err := open()
				if err != nil {
					return false
				}
				streams = append(streams, stream{id: id})
			}
			for time.Now().Before(deadline) {
				for i := range streams {
					s := &streams[i]
					if s.sent+perRound >= msgLen {
						continue // never the last byte: the message stays unfinished
					}
					n, err := h.writeDataFrames(s.id, chunk, 1, deadline)
					s.sent += n
					frames.Add(int64(n))
					switch {
					case errors.Is(err, errStreamEnded):
						id, err := open()
						if err != nil {
							return false
						}
						*s = stream{id: id}
					case err != nil:
						return false
					}
				}
			}
			return false
		})
		fc.report(t)
	})
	var ended int
	for _, h := range fc.all {
		ended += h.trailerStatuses()["1"] // CANCELLED
	}
	fc.closeAll()
	t.Logf("%d frames of 1 byte sent on %d streams; %d streams ended by the server with CANCELLED",
		frames.Load(), opened.Load(), ended)
	if ended == 0 {
		t.Errorf("no stream ended with CANCELLED; want streams shed once the heap passed the budget and its headroom")
	}
}
