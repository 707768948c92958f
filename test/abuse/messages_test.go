package abuse

import (
	"encoding/binary"
	"errors"
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
