package abuse

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// processPath is the ext_proc method Envoy calls.
const processPath = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"

// dialTimeout bounds a TCP connect to the loopback; it only catches a hang.
const dialTimeout = 5 * time.Second

// h2conn is the attacker's side of one HTTP/2 connection: frames are written
// through a buffer that the caller flushes (an attacker batches), and a read
// loop, unless turned off, reads and counts what the server sends until it
// closes the connection.
type h2conn struct {
	c  net.Conn
	bw *bufio.Writer
	fr *http2.Framer

	opened time.Time
	read   bool // whether a read loop runs
	// writeFailed: a write failed, the only sign of the server closing a
	// connection that is never read. Set by flood.
	writeFailed bool
	done        chan struct{} // closed when the read loop ends
	// Set by the read loop before done is closed.
	closedAfter time.Duration
	goAway      *http2.GoAwayFrame
	readErr     error

	// Counted by the read loop.
	rsts, settingsAcks, pingAcks atomic.Int64

	mu         sync.Mutex
	grpcStatus map[string]int // streams ended, by grpcStatus
	// Flow control, kept by the read loop (WINDOW_UPDATE, SETTINGS) and
	// writeDataFlow: what the server lets this side send.
	connWindow   int64
	initWindow   int64            // SETTINGS_INITIAL_WINDOW_SIZE
	streamGrants map[uint32]int64 // per stream: WINDOW_UPDATEs minus DATA sent
	ended        map[uint32]bool  // streams the server reset or ended
	wake         chan struct{}    // closed and replaced when a window grows, a stream ends or a PING is acknowledged
}

// dialH2 connects to addr and sends the client preface and an empty SETTINGS,
// as every HTTP/2 client starts. With read false nothing is ever read: the
// server's writes back up, as with a client that stopped reading.
func dialH2(addr string, read bool) (*h2conn, error) {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	h := &h2conn{c: c, bw: bufio.NewWriterSize(c, 64<<10), opened: time.Now(), read: read, done: make(chan struct{}),
		grpcStatus: map[string]int{}, connWindow: 65535, initWindow: 65535,
		streamGrants: map[uint32]int64{}, ended: map[uint32]bool{}, wake: make(chan struct{})}
	h.fr = http2.NewFramer(h.bw, c)
	// Trailers are decoded for their grpc-status, which says why a stream ended.
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	if _, err := h.bw.WriteString(http2.ClientPreface); err != nil {
		c.Close()
		return nil, err
	}
	if err := h.fr.WriteSettings(); err != nil {
		c.Close()
		return nil, err
	}
	if err := h.flush(); err != nil {
		c.Close()
		return nil, err
	}
	if read {
		go h.readLoop()
	} else {
		close(h.done)
	}
	return h, nil
}

func (h *h2conn) flush() error { return h.bw.Flush() }

func (h *h2conn) Close() error { return h.c.Close() }

func (h *h2conn) readLoop() {
	defer close(h.done)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.closedAfter = time.Since(h.opened)
			h.readErr = err
			return
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			h.mu.Lock()
			h.goAway = f
			h.mu.Unlock()
		case *http2.RSTStreamFrame:
			h.rsts.Add(1)
			h.mu.Lock()
			h.ended[f.StreamID] = true
			h.wakeLocked()
			h.mu.Unlock()
		case *http2.SettingsFrame:
			if f.IsAck() {
				h.settingsAcks.Add(1)
			} else if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				h.mu.Lock()
				h.initWindow = int64(v)
				h.wakeLocked()
				h.mu.Unlock()
			}
		case *http2.WindowUpdateFrame:
			h.mu.Lock()
			if f.StreamID == 0 {
				h.connWindow += int64(f.Increment)
			} else {
				h.streamGrants[f.StreamID] += int64(f.Increment)
			}
			h.wakeLocked()
			h.mu.Unlock()
		case *http2.PingFrame:
			if f.IsAck() {
				h.mu.Lock()
				h.pingAcks.Add(1)
				h.wakeLocked()
				h.mu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				h.mu.Lock()
				h.grpcStatus[grpcStatus(f)]++
				h.ended[f.StreamID] = true
				h.wakeLocked()
				h.mu.Unlock()
			}
		}
	}
}

// grpcStatus names the status in the trailers f: grpc-status and, when the
// server answered with HTTP headers alone, :status.
func grpcStatus(f *http2.MetaHeadersFrame) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == "grpc-status" {
			return hf.Value
		}
	}
	return ":status " + f.PseudoValue("status")
}

// streamEnded reports whether the server has reset or ended stream id.
func (h *h2conn) streamEnded(id uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended[id]
}

// wakeLocked wakes writers waiting for a window or a PING acknowledgement;
// h.mu is held.
func (h *h2conn) wakeLocked() {
	close(h.wake)
	h.wake = make(chan struct{})
}

// writeDataFlow writes payload on stream id within the windows the server
// grants, as a client must (sending past them is a FLOW_CONTROL_ERROR, which
// would end the attack at once), waiting for WINDOW_UPDATEs until deadline.
// It returns how many bytes were written. It needs the read loop.
func (h *h2conn) writeDataFlow(id uint32, payload []byte, deadline time.Time) (int, error) {
	return h.writeDataFrames(id, payload, 16<<10, deadline)
}

// writeDataFrames is writeDataFlow in DATA frames of at most maxFrame bytes.
func (h *h2conn) writeDataFrames(id uint32, payload []byte, maxFrame int64, deadline time.Time) (int, error) {
	sent := 0
	for sent < len(payload) {
		h.mu.Lock()
		if h.ended[id] {
			h.mu.Unlock()
			return sent, errStreamEnded
		}
		n := min(int64(len(payload)-sent), maxFrame, h.connWindow, h.initWindow+h.streamGrants[id])
		woken := h.wake
		if n > 0 {
			h.connWindow -= n
			h.streamGrants[id] -= n
		}
		h.mu.Unlock()
		if n <= 0 {
			if err := h.flush(); err != nil {
				return sent, err
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				return sent, errDeadline
			}
			select {
			case <-woken:
			case <-h.done:
				return sent, fmt.Errorf("connection closed: %w", h.readErr)
			case <-time.After(wait):
				return sent, errDeadline
			}
			continue
		}
		if err := h.fr.WriteData(id, false, payload[sent:sent+int(n)]); err != nil {
			return sent, err
		}
		sent += int(n)
	}
	return sent, h.flush()
}

// barrier sends a PING and waits for its acknowledgement: the server reads a
// connection's frames in order, so once it answers, it has read everything
// written before. It is how an attack waits for the server to catch up.
func (h *h2conn) barrier(deadline time.Time) error {
	h.mu.Lock()
	acked := h.pingAcks.Load()
	h.mu.Unlock()
	if err := h.fr.WritePing(false, [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}); err != nil {
		return err
	}
	if err := h.flush(); err != nil {
		return err
	}
	for {
		h.mu.Lock()
		woken := h.wake
		h.mu.Unlock()
		if h.pingAcks.Load() > acked {
			return nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return errDeadline
		}
		select {
		case <-woken:
		case <-h.done:
			return fmt.Errorf("connection closed: %w", h.readErr)
		case <-time.After(wait):
			return errDeadline
		}
	}
}

var (
	// errDeadline: the attack's time ran out before it was done.
	errDeadline = errors.New("attack deadline passed")
	// errStreamEnded: the server reset or ended the stream being written.
	errStreamEnded = errors.New("the server ended the stream")
)

// closed reports whether the read loop has ended: the server closed the
// connection (or reset it). Always true without a read loop.
func (h *h2conn) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// trailerStatuses returns the grpc-status of every stream the server ended,
// counted.
func (h *h2conn) trailerStatuses() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.grpcStatus))
	for k, v := range h.grpcStatus {
		out[k] = v
	}
	return out
}

// requestBlock is the HPACK header block of a gRPC Process request as Envoy
// sends one, with extra fields after it. Fields are literals never indexed,
// so that blocks are independent of each other and can be replayed.
func requestBlock(extra ...hpack.HeaderField) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: processPath},
		{Name: ":authority", Value: "extproc"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}, extra...) {
		f.Sensitive = true
		if err := enc.WriteField(f); err != nil {
			panic(err) // writing to a bytes.Buffer does not fail
		}
	}
	return buf.Bytes()
}

// padFields returns header fields "x-pad-N: aaa…" of about n bytes together.
func padFields(n int) []hpack.HeaderField {
	const valueLen = 4000
	value := string(bytes.Repeat([]byte{'a'}, valueLen))
	var out []hpack.HeaderField
	for i := 0; n > 0; i++ {
		out = append(out, hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", i), Value: value})
		n -= valueLen + 32 // RFC 9113 §6.5.2 counts 32 bytes per field
	}
	return out
}

// writeHeaders writes block on stream id, split into HEADERS and as many
// CONTINUATION frames as the default 16 KiB frame size needs.
func (h *h2conn) writeHeaders(id uint32, block []byte, endStream bool) error {
	const maxFrame = 16 << 10
	first := block[:min(len(block), maxFrame)]
	rest := block[len(first):]
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first,
		EndHeaders: len(rest) == 0, EndStream: endStream}); err != nil {
		return err
	}
	for len(rest) > 0 {
		chunk := rest[:min(len(rest), maxFrame)]
		rest = rest[len(chunk):]
		if err := h.fr.WriteContinuation(id, len(rest) == 0, chunk); err != nil {
			return err
		}
	}
	return nil
}

// grpcFrame returns msg with gRPC's 5-byte prefix: not compressed, its length.
func grpcFrame(msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// headersMessage is a small ext_proc request_headers message, gRPC-framed.
var headersMessage = func() []byte {
	b, err := proto.Marshal(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/mcp")}}}}}})
	if err != nil {
		panic(err)
	}
	return grpcFrame(b)
}()
