package grpclite

// Protocol edge cases, driven with raw HTTP/2 frames.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	rawMethod    = "/grpclite.test.Echo/Stream"
	rawWaitLimit = 10 * time.Second
)

// serveRaw serves opts (Method: rawMethod, Handler: Echo unless set) on
// 127.0.0.1 until the test ends, and returns the address.
func serveRaw(t *testing.T, opts Options) string {
	t.Helper()
	_, addr := serveRawServer(t, opts)
	return addr
}

func serveRawServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	if opts.Method == "" {
		opts.Method = rawMethod
	}
	if opts.Handler == nil {
		opts.Handler = Echo
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(opts)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// rawClient speaks HTTP/2 frame by frame.
type rawClient struct {
	t    *testing.T
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

// dialRaw connects to addr; with preface, it sends the client preface and an
// empty SETTINGS frame.
func dialRaw(t *testing.T, addr string, preface bool) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc}
	c.fr = http2.NewFramer(nc, nc)
	c.fr.AllowIllegalWrites = true
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if preface {
		c.write([]byte(http2.ClientPreface))
		c.check(c.fr.WriteSettings())
	}
	return c
}

func (c *rawClient) check(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatalf("writing to the server: %v", err)
	}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_, err := c.nc.Write(b)
	c.check(err)
}

// headers opens stream id for path with a gRPC request's headers.
func (c *rawClient) headers(id uint32, path string, endStream bool) {
	c.t.Helper()
	c.hbuf.Reset()
	for _, f := range requestFields(path) {
		c.henc.WriteField(f)
	}
	c.check(c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: endStream,
	}))
}

func requestFields(path string) []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "test"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}
}

func (c *rawClient) data(id uint32, b []byte, endStream bool) {
	c.t.Helper()
	c.check(c.fr.WriteData(id, endStream, b))
}

// grpcMessage frames msg as gRPC does, with the compressed flag given.
func grpcMessage(flag byte, msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// next reads the next frame, failing the test on error or after rawWaitLimit.
// A DATA frame's payload is valid until the next read.
func (c *rawClient) next() http2.Frame {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(rawWaitLimit))
	f, err := c.fr.ReadFrame()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// until reads frames until one satisfies match, and returns it.
func (c *rawClient) until(what string, match func(http2.Frame) bool) http2.Frame {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(rawWaitLimit))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

// trailers reads until the HEADERS frame that ends stream id.
func (c *rawClient) trailers(id uint32) *http2.MetaHeadersFrame {
	c.t.Helper()
	return c.until("the stream's trailers", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id && h.StreamEnded()
	}).(*http2.MetaHeadersFrame)
}

// closed reads until the server closes the connection, returning the frames
// read meanwhile.
func (c *rawClient) closed() []http2.Frame {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(rawWaitLimit))
	var frames []http2.Frame
	for {
		f, err := c.fr.ReadFrame()
		switch {
		case err == nil:
			if d, ok := f.(*http2.DataFrame); ok {
				// Its payload is the Framer's, and the next read reuses it.
				frames = append(frames, &http2.DataFrame{FrameHeader: d.FrameHeader})
				continue
			}
			frames = append(frames, f)
			continue
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
			return frames
		default:
			c.t.Fatalf("waiting for the server to close the connection: %v (frames read: %v)", err, frames)
		}
	}
}

func field(h *http2.MetaHeadersFrame, name string) string {
	for _, f := range h.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func goAwayIn(frames []http2.Frame) *http2.GoAwayFrame {
	for _, f := range frames {
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g
		}
	}
	return nil
}

func TestServerSendsSettingsFirst(t *testing.T) {
	CheckLeaks(t)
	c := dialRaw(t, serveRaw(t, Options{MaxConcurrentStreams: 7, StreamWindow: 1 << 18}), true)
	if f, ok := c.next().(*http2.SettingsFrame); !ok || f.IsAck() {
		t.Fatalf("first frame from the server: got %v, want SETTINGS", f)
	}
	// Once a stream opens, the server's own settings follow.
	c.headers(1, rawMethod, false)
	f := c.until("SETTINGS with values", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && !s.IsAck() && s.NumSettings() > 0
	}).(*http2.SettingsFrame)
	for id, want := range map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: 7,
		http2.SettingInitialWindowSize:    1 << 18,
	} {
		if got, ok := f.Value(id); !ok || got != want {
			t.Errorf("setting %v: got (%d, %v), want %d", id, got, ok, want)
		}
	}
}

func TestPingIsAcknowledgedWithItsData(t *testing.T) {
	tests := []struct {
		name         string
		streamBefore bool
	}{
		{"after the first stream", true},
		// Before the first stream nothing is sent but the empty SETTINGS; the
		// acknowledgement follows the stream's opening.
		{"before the first stream", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			c := dialRaw(t, serveRaw(t, Options{}), true)
			data := [8]byte{'p', 'i', 'n', 'g', 0, 1, 2, 0xff}
			if tt.streamBefore {
				c.headers(1, rawMethod, false)
			}
			c.check(c.fr.WritePing(false, data))
			if !tt.streamBefore {
				c.headers(1, rawMethod, false)
			}
			p := c.until("PING ack", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
			if !p.IsAck() || p.Data != data {
				t.Errorf("got PING (ack %v, data %q), want ack with %q", p.IsAck(), p.Data, data)
			}
		})
	}
}

func TestProtocolErrorsEndConnectionWithGoAway(t *testing.T) {
	tests := []struct {
		name     string
		send     func(c *rawClient)
		wantLast uint32
	}{
		{
			name: "DATA on an idle stream",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.data(3, grpcMessage(0, []byte("x")), false)
			},
			wantLast: 1,
		},
		{
			name: "even stream id first",
			send: func(c *rawClient) { c.headers(2, rawMethod, false) },
		},
		{
			name: "even stream id after a stream",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.headers(2, rawMethod, false)
			},
			wantLast: 1,
		},
		{
			name: "stream id going down",
			send: func(c *rawClient) {
				c.headers(5, rawMethod, false)
				c.headers(3, rawMethod, false)
			},
			wantLast: 5,
		},
		{
			name: "RST_STREAM on an idle stream",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.check(c.fr.WriteRSTStream(9, http2.ErrCodeCancel))
			},
			wantLast: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			c := dialRaw(t, serveRaw(t, Options{}), true)
			tt.send(c)
			frames := c.closed()
			g := goAwayIn(frames)
			if g == nil {
				t.Fatalf("connection closed without GOAWAY; frames: %v", frames)
			}
			if g.ErrCode != http2.ErrCodeProtocol || g.LastStreamID != tt.wantLast {
				t.Errorf("got GOAWAY (%v, last stream %d), want (PROTOCOL_ERROR, last stream %d)", g.ErrCode, g.LastStreamID, tt.wantLast)
			}
		})
	}
}

func TestStreamStatus(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		send       func(c *rawClient)
		id         uint32 // the stream answered; 0: 1
		wantStatus string
		wantMsg    string // a substring of grpc-message
	}{
		{
			name:       "HEADERS with END_STREAM and no message",
			send:       func(c *rawClient) { c.headers(1, rawMethod, true) },
			wantStatus: "0",
		},
		{
			name: "compressed message",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.data(1, grpcMessage(1, []byte("gzipped?")), false)
			},
			wantStatus: "12", wantMsg: "compressed",
		},
		{
			name: "message over MaxMessageBytes",
			opts: Options{MaxMessageBytes: 10},
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.data(1, grpcMessage(0, make([]byte, 11)), false)
			},
			wantStatus: "8",
		},
		{
			name: "END_STREAM inside a message",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.data(1, grpcMessage(0, []byte("abcdef"))[:7], true)
			},
			wantStatus: "13",
		},
		{
			name: "another method",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.headers(3, "/other.Service/Method", true)
			},
			id: 3, wantStatus: "12", wantMsg: "unknown method",
		},
		{
			name: "content-type not gRPC",
			send: func(c *rawClient) {
				c.hbuf.Reset()
				for _, f := range requestFields(rawMethod) {
					if f.Name == "content-type" {
						f.Value = "application/json"
					}
					c.henc.WriteField(f)
				}
				c.check(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: true}))
			},
			wantStatus: "13",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			c := dialRaw(t, serveRaw(t, tt.opts), true)
			tt.send(c)
			h := c.trailers(max(tt.id, 1))
			if got := field(h, "grpc-status"); got != tt.wantStatus {
				t.Errorf("grpc-status: got %q, want %q (grpc-message %q)", got, tt.wantStatus, field(h, "grpc-message"))
			}
			if got := field(h, "grpc-message"); !strings.Contains(got, tt.wantMsg) {
				t.Errorf("grpc-message: got %q, want it to contain %q", got, tt.wantMsg)
			}
			if got := field(h, ":status"); got != "200" {
				t.Errorf(":status: got %q, want 200", got)
			}
		})
	}
}

// holdFirst returns a handler that holds each stream's first message until
// the stream's context ends, and echoes the others.
func holdFirst() Handler {
	return func(ctx context.Context) StreamHandler {
		first := true
		return &HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
			if first {
				first = false
				go func() {
					<-ctx.Done()
					reply(nil, ctx.Err())
				}()
				return
			}
			reply(msg, nil)
		}}
	}
}

func TestDataBeyondStreamWindowIsFlowControlError(t *testing.T) {
	CheckLeaks(t)
	const window = 65535
	c := dialRaw(t, serveRaw(t, Options{StreamWindow: window, Handler: holdFirst()}), true)
	c.headers(1, rawMethod, false)
	// The first message is held, the second waits behind it: the server grants
	// no window until the handler answers.
	c.data(1, append(grpcMessage(0, []byte("one")), grpcMessage(0, []byte("two"))...), false)
	sent := 16
	chunk := make([]byte, 16384)
	for sent <= window {
		c.data(1, chunk, false)
		sent += len(chunk)
	}
	rst := c.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeFlowControl {
		t.Errorf("got RST_STREAM (stream %d, %v), want (stream 1, FLOW_CONTROL_ERROR)", rst.StreamID, rst.ErrCode)
	}
	// The connection lives on.
	c.headers(3, rawMethod, true)
	if h := c.trailers(3); field(h, "grpc-status") != "0" {
		t.Errorf("stream after the reset: grpc-status %q, want 0", field(h, "grpc-status"))
	}
}

func TestNonHTTP2PrefaceClosesConnection(t *testing.T) {
	tests := []struct {
		name string
		send string
	}{
		{"HTTP/1.1 request", "GET / HTTP/1.1\r\nHost: example\r\n\r\n"},
		{"almost the preface", strings.Replace(http2.ClientPreface, "2.0", "2.1", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			c := dialRaw(t, serveRaw(t, Options{}), false)
			c.write([]byte(tt.send))
			c.nc.SetReadDeadline(time.Now().Add(rawWaitLimit))
			got, err := io.ReadAll(c.nc)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("reading until the server closes: %v", err)
			}
			// All the server wrote is its empty SETTINGS frame, before it read.
			if want := []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) && err == nil {
				t.Errorf("got %x from the server, want %x and then the connection closed", got, want)
			}
		})
	}
}

// An endpoint must not allocate what a frame header claims before checking it
// against the frame size it advertised (16384 by default, RFC 9113 §4.2).
func TestFrameLargerThanMaxFrameSizeClosesConnection(t *testing.T) {
	CheckLeaks(t)
	c := dialRaw(t, serveRaw(t, Options{}), true)
	c.headers(1, rawMethod, false)
	c.data(1, grpcMessage(0, make([]byte, 16384)), false) // 16389 bytes
	frames := c.closed()
	if g := goAwayIn(frames); g != nil && g.ErrCode != http2.ErrCodeFrameSize {
		t.Errorf("got GOAWAY %v, want FRAME_SIZE_ERROR", g.ErrCode)
	}
}

// A client may send up to 65535 bytes on a stream before it has the server's
// SETTINGS (RFC 9113 §6.9.2), whatever StreamWindow says.
func TestSmallStreamWindowAcceptsDataSentBeforeSettings(t *testing.T) {
	CheckLeaks(t)
	c := dialRaw(t, serveRaw(t, Options{StreamWindow: 1024}), true)
	c.headers(1, rawMethod, false)
	msg := grpcMessage(0, bytes.Repeat([]byte("z"), 60000))
	for len(msg) > 0 {
		n := min(len(msg), 16384)
		c.data(1, msg[:n], len(msg) == n)
		msg = msg[n:]
	}
	var got int
	h := c.until("the stream's end", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.DataFrame:
			got += len(f.Data())
		case *http2.RSTStreamFrame:
			t.Fatalf("got RST_STREAM %v on stream %d, want the message echoed", f.ErrCode, f.StreamID)
		case *http2.MetaHeadersFrame:
			return f.StreamEnded()
		case *http2.WindowUpdateFrame, *http2.SettingsFrame:
		}
		return false
	}).(*http2.MetaHeadersFrame)
	if want := 5 + 60000; got != want || field(h, "grpc-status") != "0" {
		t.Errorf("got %d bytes and grpc-status %q, want %d and 0", got, field(h, "grpc-status"), want)
	}
}

// A stream whose end is decided (here: a compressed message, status 12) while
// a reply waits for window takes no more messages. Before the fix, the next
// DATA frames were assembled with the stale length of the message before, and
// the handler got messages the client never sent, answered before the status.
func TestStreamEndingBehindBlockedReplyTakesNoMoreInput(t *testing.T) {
	CheckLeaks(t)
	var messages atomic.Int32
	addr := serveRaw(t, Options{Handler: func(context.Context) StreamHandler {
		return &HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
			messages.Add(1)
			reply(msg, nil)
		}}
	}})
	c := dialRaw(t, addr, false)
	c.write([]byte(http2.ClientPreface))
	// No stream window: every reply waits.
	c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	c.headers(1, rawMethod, false)
	c.data(1, grpcMessage(0, nil), false)         // answered; the reply waits
	c.data(1, grpcMessage(1, []byte("z")), false) // ends the stream: 12
	c.data(1, []byte{0}, false)                   // must be ignored
	c.data(1, grpcMessage(0, []byte("late")), false)
	data := [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}
	c.check(c.fr.WritePing(false, data))
	c.until("PING ack", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() && p.Data == data })
	if n := messages.Load(); n != 1 {
		t.Errorf("handler got %d messages, want 1", n)
	}
	// Window for the reply: it goes, then the status.
	c.check(c.fr.WriteWindowUpdate(1, 1<<20))
	var got int
	h := c.until("trailers", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.DataFrame:
			if f.StreamID == 1 {
				got += len(f.Data())
			}
		case *http2.MetaHeadersFrame:
			return f.StreamID == 1 && f.StreamEnded()
		}
		return false
	}).(*http2.MetaHeadersFrame)
	if got != 5 || field(h, "grpc-status") != "12" {
		t.Errorf("got %d bytes of reply and grpc-status %q, want 5 and 12", got, field(h, "grpc-status"))
	}
}

// After a stream is reset, nothing more is sent on it, even output that was
// waiting for window when the reset came (RFC 9113 §5.1, "closed").
func TestResetStreamSendsNoMoreData(t *testing.T) {
	CheckLeaks(t)
	held, release := make(chan struct{}), make(chan struct{})
	addr := serveRaw(t, Options{Handler: func(ctx context.Context) StreamHandler {
		n := 0
		return &HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) {
			if n++; n == 1 {
				// A reply larger than the connection's 65535-byte window.
				reply(make([]byte, 100000), nil)
				return
			}
			// Held past the reset, so that the stream stays in the
			// connection's books.
			close(held)
			go func() {
				<-release
				reply(nil, ctx.Err())
			}()
		}}
	}})
	t.Cleanup(func() { close(release) }) // before the server closes
	c := dialRaw(t, addr, false)
	c.write([]byte(http2.ClientPreface))
	c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}))
	c.headers(1, rawMethod, false)
	c.data(1, grpcMessage(0, []byte("big")), false)
	got := 0
	c.until("the connection window's worth of reply", func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
		}
		return got >= 65535
	})
	c.data(1, grpcMessage(0, []byte("hold")), false)
	select {
	case <-held:
	case <-time.After(rawWaitLimit):
		t.Fatal("timed out waiting for the handler to hold the second message")
	}
	c.check(c.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	// Window again on the connection, then a barrier.
	c.check(c.fr.WriteWindowUpdate(0, 1<<20))
	data := [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}
	c.check(c.fr.WritePing(false, data))
	c.until("PING ack", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.DataFrame:
			t.Errorf("got DATA (%d bytes) on stream %d after it was reset", len(f.Data()), f.StreamID)
		case *http2.MetaHeadersFrame:
			t.Errorf("got HEADERS on stream %d after it was reset", f.StreamID)
		case *http2.PingFrame:
			return f.IsAck() && f.Data == data
		}
		return false
	})
}

func TestStreamsPastMaxConcurrentStreamsAreRefused(t *testing.T) {
	CheckLeaks(t)
	c := dialRaw(t, serveRaw(t, Options{MaxConcurrentStreams: 1}), true)
	c.headers(1, rawMethod, false)
	c.headers(3, rawMethod, false)
	rst := c.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if rst.StreamID != 3 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Errorf("got RST_STREAM (stream %d, %v), want (stream 3, REFUSED_STREAM)", rst.StreamID, rst.ErrCode)
	}
	// Once stream 1 ends, there is room again.
	c.data(1, nil, true)
	if h := c.trailers(1); field(h, "grpc-status") != "0" {
		t.Fatalf("stream 1: grpc-status %q, want 0", field(h, "grpc-status"))
	}
	c.headers(5, rawMethod, true)
	if h := c.trailers(5); field(h, "grpc-status") != "0" {
		t.Errorf("stream 5: grpc-status %q, want 0", field(h, "grpc-status"))
	}
}

// drainWithStreamOpen connects, opens stream 1 and waits for its reply, then
// starts s.Shutdown; the channel gets Shutdown's result.
func drainWithStreamOpen(t *testing.T, s *Server, addr string) (*rawClient, <-chan error) {
	t.Helper()
	c := dialRaw(t, addr, true)
	c.headers(1, rawMethod, false)
	c.data(1, grpcMessage(0, []byte("x")), false)
	c.until("the reply", func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamID == 1 })
	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(t.Context()) }()
	return c, shutdown
}

// finishDrain ends stream 1, which must end with status OK; the server must
// then close the connection and Shutdown return nil.
func finishDrain(t *testing.T, c *rawClient, shutdown <-chan error) {
	t.Helper()
	c.data(1, nil, true)
	if h := c.trailers(1); field(h, "grpc-status") != "0" {
		t.Errorf("stream 1: grpc-status %q, want 0", field(h, "grpc-status"))
	}
	c.closed()
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown returned %v, want nil", err)
		}
	case <-time.After(rawWaitLimit):
		t.Fatal("timed out waiting for Shutdown")
	}
}

// Shutdown drains as grpc-go does: GOAWAY naming the largest stream id and a
// PING; streams opened before the PING's acknowledgement are served; then a
// GOAWAY naming the last stream, after which new streams are refused; the
// connection closes when its last stream ends.
func TestShutdownDrainsWithTwoGoAways(t *testing.T) {
	CheckLeaks(t)
	s, addr := serveRawServer(t, Options{})
	c, shutdown := drainWithStreamOpen(t, s, addr)
	g := c.until("the first GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if g.LastStreamID != 1<<31-1 || g.ErrCode != http2.ErrCodeNo {
		t.Errorf("first GOAWAY: got (last stream %d, %v), want (%d, NO_ERROR)", g.LastStreamID, g.ErrCode, 1<<31-1)
	}
	p := c.until("the drain's PING", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
	if p.IsAck() {
		t.Fatalf("got a PING ack, want a PING")
	}
	// Still before the acknowledgement: served.
	c.headers(3, rawMethod, true)
	if h := c.trailers(3); field(h, "grpc-status") != "0" {
		t.Errorf("stream opened during the drain: grpc-status %q, want 0", field(h, "grpc-status"))
	}
	c.check(c.fr.WritePing(true, p.Data))
	g = c.until("the final GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if g.LastStreamID != 3 || g.ErrCode != http2.ErrCodeNo {
		t.Errorf("final GOAWAY: got (last stream %d, %v), want (3, NO_ERROR)", g.LastStreamID, g.ErrCode)
	}
	c.headers(5, rawMethod, false)
	rst := c.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Errorf("stream after the final GOAWAY: got RST_STREAM (stream %d, %v), want (5, REFUSED_STREAM)", rst.StreamID, rst.ErrCode)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while stream 1 was open", err)
	default:
	}
	finishDrain(t, c, shutdown)
}

// The bytes of a connection's prelude are kept (to replay them to the
// fallback), so the prelude must be bounded even inside one frame. Before the
// fix, a first HEADERS continued by endless CONTINUATION frames holding only
// HPACK table size updates (which decode to no field, so the header list limit
// never trips) was recorded in full: unbounded memory per connection.
func TestEndlessHeaderBlockInPreludeClosesConnection(t *testing.T) {
	CheckLeaks(t)
	c := dialRaw(t, serveRaw(t, Options{}), true)
	const total = 64 << 20
	frag := bytes.Repeat([]byte{0x20}, 16384) // dynamic table size update to 0
	sent := make(chan int, 1)
	go func() {
		n := 0
		err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag})
		for ; err == nil && n < total; n += len(frag) {
			err = c.fr.WriteContinuation(1, false, frag)
		}
		sent <- n
	}()
	select {
	case n := <-sent:
		if n >= total {
			t.Errorf("server read %d bytes of one header block before its first stream, want the connection closed past %d", n, maxPreludeBytes)
		}
	case <-time.After(rawWaitLimit):
		c.nc.Close()
		<-sent
		t.Fatal("timed out writing the header block")
	}
}

// Replies that wait for window (the client grants none) must hold back the
// window granted for requests, as grpc-go's write quota does; before the fix
// the server kept granting, and replies piled up without bound.
func TestRepliesWaitingForWindowStopRequestWindowGrants(t *testing.T) {
	CheckLeaks(t)
	const window = 65535
	addr := serveRaw(t, Options{StreamWindow: window})
	c := dialRaw(t, addr, false)
	c.write([]byte(http2.ClientPreface))
	c.check(c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	c.headers(1, rawMethod, false)
	msg := grpcMessage(0, make([]byte, 1000))
	const total = 4 << 20
	sent, credit := 0, window
	barrier := [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}
	for sent < total {
		for credit >= len(msg) && sent < total {
			c.data(1, msg, false)
			credit -= len(msg)
			sent += len(msg)
		}
		c.check(c.fr.WritePing(false, barrier))
		granted := 0
		c.until("PING ack", func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 1 {
					granted += int(f.Increment)
				}
			case *http2.RSTStreamFrame:
				t.Fatalf("got RST_STREAM %v on stream %d", f.ErrCode, f.StreamID)
			case *http2.PingFrame:
				return f.IsAck() && f.Data == barrier
			}
			return false
		})
		if granted == 0 && credit < len(msg) {
			break
		}
		credit += granted
	}
	if sent >= total {
		t.Errorf("server granted window for %d bytes of requests while their replies waited for window, want it to stop granting", sent)
	}
}

// A stream the client has closed (END_STREAM) is closed once the server's
// status goes: no RST_STREAM may follow it (RFC 9113 §5.1).
func TestStatusAfterClientEndStreamIsNotFollowedByReset(t *testing.T) {
	tests := []struct {
		name string
		send func(c *rawClient)
		id   uint32
	}{
		{
			name: "another method",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.headers(3, "/other.Service/Method", true)
			},
			id: 3,
		},
		{
			name: "END_STREAM inside a message",
			send: func(c *rawClient) {
				c.headers(1, rawMethod, false)
				c.data(1, grpcMessage(0, []byte("abcdef"))[:7], true)
			},
			id: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			CheckLeaks(t)
			c := dialRaw(t, serveRaw(t, Options{}), true)
			tt.send(c)
			c.trailers(tt.id)
			barrier := [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}
			c.check(c.fr.WritePing(false, barrier))
			c.until("PING ack", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					if f.StreamID == tt.id {
						t.Errorf("got RST_STREAM %v on stream %d after its status, want none: the stream is closed", f.ErrCode, f.StreamID)
					}
				case *http2.PingFrame:
					return f.IsAck() && f.Data == barrier
				}
				return false
			})
		})
	}
}

// A message's buffer grows with the data that arrives: a prefix declaring a
// large message, with no data behind it, costs the server next to nothing.
func TestDeclaredMessageLengthAllocatesNothingUntilDataArrives(t *testing.T) {
	CheckLeaks(t)
	const streams, declared = 16, 60 << 20
	_, addr := serveRawServer(t, Options{MaxMessageBytes: 64 << 20})
	c := dialRaw(t, addr, true)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range uint32(streams) {
		id := 2*i + 1
		c.headers(id, rawMethod, false)
		prefix := grpcMessage(0, nil)
		binary.BigEndian.PutUint32(prefix[1:], declared)
		c.data(id, append(prefix, 'x'), false)
	}
	// The PING's answer comes after every frame before it was handled.
	c.check(c.fr.WritePing(false, [8]byte{'a', 'l', 'l', 'r', 'e', 'a', 'd'}))
	c.until("the PING's acknowledgement", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck()
	})
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
		t.Errorf("allocated %d MiB for %d streams declaring %d MiB each and sending 1 byte, want under 32 MiB",
			got>>20, streams, declared>>20)
	}
}

// A client that never acknowledges the drain's PING still gets the final
// GOAWAY, after DrainTimeout, and the drain completes without waiting for
// Shutdown's deadline.
func TestDrainSendsTheFinalGoAwayWithoutThePingAcknowledgement(t *testing.T) {
	CheckLeaks(t)
	s, addr := serveRawServer(t, Options{DrainTimeout: 50 * time.Millisecond})
	c, shutdown := drainWithStreamOpen(t, s, addr)
	c.until("the first GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	// The drain's PING goes unanswered.
	g := c.until("the final GOAWAY", func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.LastStreamID != 1<<31-1
	}).(*http2.GoAwayFrame)
	if g.LastStreamID != 1 || g.ErrCode != http2.ErrCodeNo {
		t.Errorf("final GOAWAY: got (last stream %d, %v), want (1, NO_ERROR)", g.LastStreamID, g.ErrCode)
	}
	finishDrain(t, c, shutdown)
}
