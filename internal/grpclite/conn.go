package grpclite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// The client's first stream must arrive within this many bytes and frames
	// (preface, SETTINGS, WINDOW_UPDATE...), or the connection is dropped.
	maxPreludeBytes  = 64 << 10
	maxPreludeFrames = 32
	// maxHeaderListBytes bounds a stream's request headers (HPACK-decoded).
	maxHeaderListBytes = 64 << 10
	// maxWindow is the largest flow-control window HTTP/2 allows.
	maxWindow = 1<<31 - 1
	// goAwayPing is the data of the PING that separates the two GOAWAYs of a
	// drain.
	goAwayPing = "grpclite"
	ioBufBytes = 32 << 10
	// maxPendingOut bounds a stream's replies waiting for window before it
	// stops granting window for requests (grpc-go's write quota).
	maxPendingOut = 64 << 10
	// firstMsgBytes is the buffer a message starts with; it doubles as data
	// arrives, up to the declared length.
	firstMsgBytes = 32 << 10
)

// switchWriter lets the Framer's writes go to a scratch buffer until the
// connection is known to be ours, then to the connection.
type switchWriter struct{ w io.Writer }

func (s *switchWriter) Write(p []byte) (int, error) { return s.w.Write(p) }

// conn is one client connection served here.
type conn struct {
	srv *Server
	nc  net.Conn
	rec *recorder
	br  *bufio.Reader
	bw  *bufio.Writer
	sw  *switchWriter
	fr  *http2.Framer

	ctx    context.Context
	cancel context.CancelFunc

	// maxStreamID is the highest stream the client opened. Written by the
	// reading goroutine under mu, so it reads it without.
	maxStreamID uint32

	// Owned by the reading goroutine.
	recvUnacked uint32 // connection-level bytes received and not yet returned
	recvWindow  int64  // connection-level bytes the client may still send
	handlers    sync.WaitGroup

	mu sync.Mutex // guards what follows, and every write
	// streams holds the open streams.
	streams map[uint32]*stream
	// reading is true while the reading goroutine is working through frames it
	// has read; it flushes before it next blocks, so writes meanwhile need not.
	reading bool
	// Outbound flow control: what the client still lets us send on the
	// connection, its initial window for new streams, and its frame size.
	sendWindow        int64
	peerInitialWindow int64
	peerMaxFrame      int
	// blocked are the streams with output waiting for window, in order.
	blocked []*stream
	// goingAway: the final GOAWAY was sent; new streams are refused and the
	// connection closes when the last stream ends.
	goingAway bool
	// drainStarted: the first GOAWAY of a drain was sent; drainTimer sends the
	// final one if the client does not acknowledge the drain's PING in time.
	drainStarted bool
	drainTimer   *time.Timer
	// handedOver: the connection went to the fallback and is not ours to close.
	// Set under mu, but atomic so that close can read it without mu.
	handedOver atomic.Bool
	closed     bool
	hbuf       bytes.Buffer
	henc       *hpack.Encoder
}

// stream is one gRPC call.
type stream struct {
	id     uint32
	c      *conn
	ctx    context.Context
	cancel context.CancelFunc
	h      StreamHandler
	reply  func([]byte, error)

	// Owned by the reading goroutine: message assembly.
	prefix  [5]byte
	prefixN int
	msg     []byte
	msgLen  int

	// Guarded by c.mu.
	// Inbound flow control: what the client may still send, and what it sent
	// that has not been granted again. The grant waits while a message is
	// queued behind the handler, so a client cannot run far ahead of it.
	recvWindow   int64
	recvUnack    uint32
	queue        [][]byte // complete messages waiting for the handler
	busy         bool     // the handler holds a message it has not replied to
	inMessage    bool     // dispatch is inside the handler's Message
	answered     bool     // the reply came while inMessage
	remoteClosed bool     // the client sent END_STREAM
	headersSent  bool
	sendWindow   int64
	out          []byte  // framed output waiting for window
	trailer      *status // trailers to send once out is written
	ended        bool    // trailers sent or stream reset: nothing more is written
	done         bool    // Done called and removed from streams
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv: s, nc: nc, ctx: ctx, cancel: cancel,
		rec:               &recorder{r: nc, on: true},
		sw:                &switchWriter{w: &bytes.Buffer{}},
		streams:           map[uint32]*stream{},
		sendWindow:        65535,
		peerInitialWindow: 65535,
		peerMaxFrame:      16384,
		recvWindow:        65535,
	}
	c.br = bufio.NewReaderSize(c.rec, ioBufBytes)
	c.fr = http2.NewFramer(c.sw, c.br)
	// We advertise no SETTINGS_MAX_FRAME_SIZE, so frames above the default
	// 16384 are errors (RFC 9113 §4.2). The Framer's own default, 16 MiB,
	// let one frame header make the connection allocate (and keep) a 16 MiB
	// read buffer.
	c.fr.SetMaxReadFrameSize(16384)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderListBytes
	c.fr.SetReuseFrames()
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// serve runs the connection: routes it on its first stream, then reads frames
// until the connection ends, then waits for the handlers still running.
func (c *conn) serve() {
	defer c.cancel()
	ours, first, err := c.prelude()
	if err != nil {
		c.nc.Close()
		return
	}
	if !ours {
		c.rec.on = false
		c.mu.Lock()
		if c.drainStarted {
			c.mu.Unlock()
			c.nc.Close()
			return
		}
		c.handedOver.Store(true)
		c.mu.Unlock()
		c.srv.fallback.handOver(newReplayConn(c.nc, c.rec.buf))
		return
	}
	c.rec.on, c.rec.buf = false, nil
	c.start()
	err = c.handleFrame(first)
	for err == nil {
		if c.br.Buffered() == 0 {
			c.mu.Lock()
			c.reading = false
			c.flushLocked()
			c.mu.Unlock()
			var f http2.Frame
			f, err = c.fr.ReadFrame()
			c.mu.Lock()
			c.reading = true
			c.mu.Unlock()
			if err == nil {
				err = c.handleFrame(f)
			}
		} else {
			var f http2.Frame
			if f, err = c.fr.ReadFrame(); err == nil {
				err = c.handleFrame(f)
			}
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			c.mu.Lock()
			c.resetLocked(se.StreamID, se.Code)
			c.mu.Unlock()
			err = nil
		}
	}
	c.end(err)
	c.handlers.Wait()
}

// prelude reads the client preface and frames up to the first HEADERS, and
// reports whether they open a stream of Method. Nothing is written: SETTINGS
// and the like are applied to the connection's state, and the Framer's writes
// (SETTINGS and PING acknowledgements) wait in the scratch buffer.
func (c *conn) prelude() (bool, *http2.MetaHeadersFrame, error) {
	// The server preface, sent now because some clients (grpc-go's) open no
	// stream before they have it. It is empty, so it holds whichever server
	// the connection goes to: each sends its own settings after it.
	var empty [9]byte
	empty[3] = byte(http2.FrameSettings)
	if _, err := c.nc.Write(empty[:]); err != nil {
		return false, nil, err
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil {
		return false, nil, err
	}
	if string(preface) != http2.ClientPreface {
		return false, nil, errors.New("not an HTTP/2 client preface")
	}
	for range maxPreludeFrames {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return false, nil, err
		}
		if len(c.rec.buf) > maxPreludeBytes {
			return false, nil, errors.New("no stream within the first frames")
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			return h.PseudoValue("path") == c.srv.opts.Method, h, nil
		}
		if err := c.handleFrame(f); err != nil {
			return false, nil, err
		}
	}
	return false, nil, errors.New("no stream within the first frames")
}

// start writes our settings and the connection window, then
// what the prelude's frames asked for, and points the Framer at the connection.
func (c *conn) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	scratch := c.sw.w.(*bytes.Buffer)
	c.bw = bufio.NewWriterSize(writerFunc(c.write), ioBufBytes)
	c.sw.w = c.bw
	o := c.srv.opts
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: o.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: o.StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListBytes},
	)
	if o.ConnWindow > 65535 {
		c.fr.WriteWindowUpdate(0, o.ConnWindow-65535)
		c.recvWindow = int64(o.ConnWindow)
	}
	c.bw.Write(scratch.Bytes())
	c.reading = true
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// write is the bufio.Writer's way to the connection.
func (c *conn) write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	if err != nil {
		// The reader then fails too and ends the connection.
		c.nc.Close()
	}
	return n, err
}

// flushLocked sends what is buffered; before start, nothing is sent.
func (c *conn) flushLocked() {
	if c.bw != nil && c.bw.Buffered() > 0 {
		c.bw.Flush()
	}
}

// flushIfIdleLocked flushes unless the reading goroutine will.
func (c *conn) flushIfIdleLocked() {
	if !c.reading {
		c.flushLocked()
	}
}

// handleFrame acts on one frame from the client. It returns a StreamError for
// a problem confined to one stream, and any other error to end the connection.
func (c *conn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if !f.IsAck() {
			c.fr.WritePing(true, f.Data)
		} else if string(f.Data[:]) == goAwayPing && !c.goingAway {
			c.finalGoAwayLocked()
		}
		return nil
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if s := c.streams[f.StreamID]; s != nil {
			s.ended = true
			s.queue = nil
			c.dropOutputLocked(s)
			s.cancel()
			c.maybeFinishLocked(s)
		} else if f.StreamID > c.maxStreamID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	case *http2.GoAwayFrame:
		// The client opens no more streams; those open run to their end.
		c.mu.Lock()
		defer c.mu.Unlock()
		c.goingAway = true
		c.closeIfIdleLocked()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		// PRIORITY and unknown frame types are ignored, as RFC 9113 asks.
		return nil
	}
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - c.peerInitialWindow
			c.peerInitialWindow = int64(st.Val)
			for _, s := range c.streams {
				s.sendWindow += delta
				if s.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(st.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.fr.WriteSettingsAck()
	c.drainBlockedLocked()
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else if s := c.streams[f.StreamID]; s != nil {
		s.sendWindow += inc
		if s.sendWindow > maxWindow {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
		}
	}
	c.drainBlockedLocked()
	return nil
}

func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		// Trailers from the client: gRPC clients send none, but they are legal
		// and end the client's side like END_STREAM.
		if !f.StreamEnded() {
			c.mu.Unlock()
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
		c.mu.Unlock()
		return c.remoteClose(s)
	}
	c.mu.Unlock()
	if id%2 == 0 || id <= c.maxStreamID {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxStreamID = id
	switch {
	case c.goingAway:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	case uint32(len(c.streams)) >= c.srv.opts.MaxConcurrentStreams:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	case f.Truncated:
		c.trailersOnlyLocked(id, &status{code: codeResourceExhausted, msg: "request headers too large"}, f.StreamEnded())
		return nil
	case f.PseudoValue("method") != "POST":
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	case f.PseudoValue("path") != c.srv.opts.Method:
		c.trailersOnlyLocked(id, &status{code: codeUnimplemented,
			msg: "unknown method " + f.PseudoValue("path") + " on a connection of " + c.srv.opts.Method}, f.StreamEnded())
		return nil
	case !isGRPCContentType(f):
		c.trailersOnlyLocked(id, &status{code: codeInternal, msg: "content-type is not application/grpc"}, f.StreamEnded())
		return nil
	}
	ctx, cancel := context.WithCancel(c.ctx)
	s := &stream{id: id, c: c, ctx: ctx, cancel: cancel,
		recvWindow: int64(c.srv.opts.StreamWindow), sendWindow: c.peerInitialWindow}
	s.reply = s.onReply
	c.streams[id] = s
	c.handlers.Add(1)
	s.h = c.srv.opts.Handler(ctx)
	if f.StreamEnded() {
		// A call with no message at all: nothing to hand over.
		s.remoteClosed = true
		c.maybeEndLocked(s)
	}
	return nil
}

func isGRPCContentType(f *http2.MetaHeadersFrame) bool {
	for _, hf := range f.RegularFields() {
		if hf.Name == "content-type" {
			v := hf.Value
			return v == "application/grpc" || strings.HasPrefix(v, "application/grpc+") || strings.HasPrefix(v, "application/grpc;")
		}
	}
	return false
}

func (c *conn) onData(f *http2.DataFrame) error {
	n := f.Length // counts padding too, as flow control does
	c.recvWindow -= int64(n)
	if c.recvWindow < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvUnacked += n
	if c.recvUnacked >= c.srv.opts.ConnWindow/4 {
		c.mu.Lock()
		c.fr.WriteWindowUpdate(0, c.recvUnacked)
		c.mu.Unlock()
		c.recvWindow += int64(c.recvUnacked)
		c.recvUnacked = 0
	}
	c.mu.Lock()
	s := c.streams[f.StreamID]
	if s == nil {
		c.mu.Unlock()
		if f.StreamID > c.maxStreamID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// A stream that has ended on our side: its data is dropped.
		return nil
	}
	// A stream whose status waits behind output (s.trailer) has ended for its
	// input too: assembling more would misparse it (its message state stopped
	// mid-prefix) and hand the handler messages the client never sent.
	closed, ended := s.remoteClosed, s.ended || s.trailer != nil
	s.recvWindow -= int64(n)
	overrun := s.recvWindow < 0
	c.mu.Unlock()
	if closed {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	if overrun {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl}
	}
	if !ended {
		if err := c.assemble(s, f.Data()); err != nil {
			return err
		}
	}
	if f.StreamEnded() {
		if s.prefixN > 0 && !ended {
			c.mu.Lock()
			// The client's side is closed too: no RST_STREAM after the status
			// (writeTrailersLocked), and DATA after this is STREAM_CLOSED.
			s.remoteClosed = true
			c.endStreamLocked(s, &status{code: codeInternal, msg: "stream ended inside a message"})
			c.mu.Unlock()
			return nil
		}
		return c.remoteClose(s)
	}
	c.mu.Lock()
	s.recvUnack += n
	c.grantLocked(s)
	c.mu.Unlock()
	return nil
}

// grantLocked returns to the client, once a quarter of the stream's window has
// been used, what it sent, unless a message waits behind the handler.
//
// Nor while maxPendingOut bytes of its replies wait for window: the handler
// answers every message, so a client that granted no window but kept getting
// it made the replies in s.out grow without bound. (grpc-go bounds them the
// same way: Send blocks on a 64 KiB write quota, and the window is not granted
// while the handler does not read.) drainBlockedLocked grants again.
func (c *conn) grantLocked(s *stream) {
	if s.ended || s.remoteClosed || len(s.queue) > 0 || len(s.out) >= maxPendingOut || s.recvUnack < c.srv.opts.StreamWindow/4 {
		return
	}
	c.fr.WriteWindowUpdate(s.id, s.recvUnack)
	s.recvWindow += int64(s.recvUnack)
	s.recvUnack = 0
}

// assemble adds data to the stream's message under way, delivering each
// message it completes.
func (c *conn) assemble(s *stream, data []byte) error {
	for len(data) > 0 {
		if s.prefixN < 5 {
			k := copy(s.prefix[s.prefixN:], data)
			s.prefixN += k
			data = data[k:]
			if s.prefixN < 5 {
				return nil
			}
			if s.prefix[0] != 0 {
				c.mu.Lock()
				c.endStreamLocked(s, &status{code: codeUnimplemented, msg: "compressed messages are not supported"})
				c.mu.Unlock()
				return nil
			}
			size := binary.BigEndian.Uint32(s.prefix[1:])
			if uint64(size) > uint64(c.srv.opts.MaxMessageBytes) {
				c.mu.Lock()
				c.endStreamLocked(s, &status{code: codeResourceExhausted, msg: "message larger than the limit"})
				c.mu.Unlock()
				return nil
			}
			s.msgLen = int(size)
			// Sized by what arrives, not by what the prefix declares: five bytes
			// would otherwise make the server allocate up to MaxMessageBytes.
			s.msg = make([]byte, 0, min(s.msgLen, firstMsgBytes))
		}
		k := min(len(data), s.msgLen-len(s.msg))
		if len(s.msg)+k > cap(s.msg) {
			grown := make([]byte, len(s.msg), min(s.msgLen, max(2*cap(s.msg), len(s.msg)+k)))
			copy(grown, s.msg)
			s.msg = grown
		}
		s.msg = append(s.msg, data[:k]...)
		data = data[k:]
		if len(s.msg) == s.msgLen {
			msg := s.msg
			s.msg, s.prefixN = nil, 0
			c.deliver(s, msg)
		}
	}
	return nil
}

// deliver hands msg to the handler, or queues it behind the one it holds.
func (c *conn) deliver(s *stream, msg []byte) {
	c.mu.Lock()
	// s.trailer: the stream's status is decided (by a handler's error on
	// another goroutine, say); no more messages for the handler.
	if s.ended || s.trailer != nil {
		c.mu.Unlock()
		return
	}
	if s.busy {
		s.queue = append(s.queue, msg)
		c.mu.Unlock()
		return
	}
	s.busy = true
	c.mu.Unlock()
	c.dispatch(s, msg)
}

// dispatch hands msg to the handler, then each message queued behind it that
// the handler answers before Message returns. A loop, not a recursion through
// reply: a client may queue many small messages on one stream.
func (c *conn) dispatch(s *stream, msg []byte) {
	for {
		c.mu.Lock()
		s.inMessage, s.answered = true, false
		c.mu.Unlock()
		s.h.Message(msg, s.reply)
		c.mu.Lock()
		s.inMessage = false
		if !s.answered {
			// The reply comes later, on another goroutine, which goes on from there.
			c.mu.Unlock()
			return
		}
		next, ok := c.nextLocked(s)
		c.mu.Unlock()
		if !ok {
			return
		}
		msg = next
	}
}

// nextLocked takes the next queued message for the handler; if there is none,
// the handler is idle, and a stream with nothing more to come ends.
func (c *conn) nextLocked(s *stream) ([]byte, bool) {
	if !s.ended && len(s.queue) > 0 {
		next := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		c.grantLocked(s)
		c.flushIfIdleLocked()
		return next, true
	}
	s.busy = false
	c.maybeEndLocked(s)
	c.flushIfIdleLocked()
	return nil, false
}

// remoteClose records the client's END_STREAM.
func (c *conn) remoteClose(s *stream) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.remoteClosed = true
	c.maybeEndLocked(s)
	return nil
}

// onReply is the reply function handed to the handler.
func (s *stream) onReply(resp []byte, err error) {
	c := s.c
	c.mu.Lock()
	if !s.ended {
		if err != nil {
			c.endStreamLocked(s, statusOf(err))
		} else {
			c.sendMessageLocked(s, resp)
		}
	}
	if s.inMessage {
		// Answered before Message returned: dispatch goes on with the next.
		s.answered = true
		c.mu.Unlock()
		return
	}
	next, ok := c.nextLocked(s)
	c.mu.Unlock()
	if ok {
		c.dispatch(s, next)
	}
}

// maybeEndLocked ends a stream whose client has closed its side and whose
// messages have all been answered, with status OK; and finishes a stream that
// has ended once its handler is idle.
func (c *conn) maybeEndLocked(s *stream) {
	if !s.ended && s.remoteClosed && !s.busy && len(s.queue) == 0 {
		c.endStreamLocked(s, nil)
	}
	c.maybeFinishLocked(s)
}

// endStreamLocked ends the stream with st (nil: OK): trailers now, or once
// output waiting for window has gone. Messages not yet handled are dropped.
func (c *conn) endStreamLocked(s *stream, st *status) {
	if s.ended || s.trailer != nil {
		return
	}
	if st == nil {
		st = &statusOK
	}
	s.queue = nil
	if len(s.out) > 0 {
		s.trailer = st
		return
	}
	c.writeTrailersLocked(s, st)
}

func (c *conn) writeTrailersLocked(s *stream, st *status) {
	s.ended = true
	if s.headersSent {
		c.writeHeadersFrameLocked(s.id, c.trailerBlockLocked(st, false), true)
	} else {
		c.writeHeadersFrameLocked(s.id, c.trailerBlockLocked(st, true), true)
	}
	if !s.remoteClosed {
		// RFC 9113 §8.1: the response is complete; the client need send no more.
		c.fr.WriteRSTStream(s.id, http2.ErrCodeNo)
	}
	s.cancel()
	c.maybeFinishLocked(s)
}

// maybeFinishLocked removes an ended stream once its handler is idle, and
// tells the handler.
func (c *conn) maybeFinishLocked(s *stream) {
	if s.done || !s.ended || s.busy {
		return
	}
	s.done = true
	s.cancel()
	delete(c.streams, s.id)
	c.removeBlockedLocked(s)
	s.h.Done()
	c.handlers.Done()
	c.closeIfIdleLocked()
}

// resetLocked ends stream id with RST_STREAM code.
func (c *conn) resetLocked(id uint32, code http2.ErrCode) {
	c.fr.WriteRSTStream(id, code)
	if s := c.streams[id]; s != nil {
		s.ended = true
		s.queue = nil
		c.dropOutputLocked(s)
		s.cancel()
		c.maybeFinishLocked(s)
	}
}

// trailersOnlyLocked answers a stream that is never opened with just a status;
// remoteClosed: the client's HEADERS ended its side. The stream is then closed
// by the status, and RST_STREAM on a closed stream is a frame RFC 9113 §5.1
// forbids sending.
func (c *conn) trailersOnlyLocked(id uint32, st *status, remoteClosed bool) {
	c.writeHeadersFrameLocked(id, c.trailerBlockLocked(st, true), true)
	if !remoteClosed {
		c.fr.WriteRSTStream(id, http2.ErrCodeNo)
	}
}

// sendMessageLocked sends one response message, framed, as far as the flow
// control windows allow; the rest waits in s.out.
func (c *conn) sendMessageLocked(s *stream, resp []byte) {
	if !s.headersSent {
		s.headersSent = true
		c.writeHeadersFrameLocked(s.id, responseHeaders, false)
	}
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(len(resp)))
	if len(s.out) == 0 {
		n := 5 + len(resp)
		if int64(n) <= min(c.sendWindow, s.sendWindow) && n <= c.peerMaxFrame {
			// The common case: one DATA frame, no copy.
			c.sendWindow -= int64(n)
			s.sendWindow -= int64(n)
			c.writeFrameHeaderLocked(http2.FrameData, 0, s.id, n)
			c.bw.Write(prefix[:])
			c.bw.Write(resp)
			return
		}
		c.blocked = append(c.blocked, s)
	}
	s.out = append(s.out, prefix[:]...)
	s.out = append(s.out, resp...)
	c.drainBlockedLocked()
}

// drainBlockedLocked sends waiting output as far as the windows now allow.
func (c *conn) drainBlockedLocked() {
	for len(c.blocked) > 0 && c.sendWindow > 0 {
		s := c.blocked[0]
		for len(s.out) > 0 && c.sendWindow > 0 && s.sendWindow > 0 {
			n := min(int64(len(s.out)), c.sendWindow, s.sendWindow, int64(c.peerMaxFrame))
			c.writeFrameHeaderLocked(http2.FrameData, 0, s.id, int(n))
			c.bw.Write(s.out[:n])
			s.out = s.out[n:]
			c.sendWindow -= n
			s.sendWindow -= n
		}
		// Room in s.out again: the request window held back may go.
		c.grantLocked(s)
		if len(s.out) > 0 {
			// This stream waits for its own window; others may go on.
			if s.sendWindow <= 0 && len(c.blocked) > 1 {
				c.blocked = append(c.blocked[1:], s)
				if c.allStreamWindowsShutLocked() {
					return
				}
				continue
			}
			return
		}
		s.out = nil
		c.blocked = c.blocked[1:]
		if st := s.trailer; st != nil {
			s.trailer = nil
			c.writeTrailersLocked(s, st)
		}
	}
}

func (c *conn) allStreamWindowsShutLocked() bool {
	for _, s := range c.blocked {
		if s.sendWindow > 0 {
			return false
		}
	}
	return true
}

// dropOutputLocked forgets the output and trailers of a reset stream. Without
// it, a reset stream whose handler still held a message stayed in c.blocked,
// and a later WINDOW_UPDATE sent its DATA and trailers after the RST_STREAM,
// on a closed stream (RFC 9113 §5.1).
func (c *conn) dropOutputLocked(s *stream) {
	s.out, s.trailer = nil, nil
	c.removeBlockedLocked(s)
}

func (c *conn) removeBlockedLocked(s *stream) {
	for i, b := range c.blocked {
		if b == s {
			c.blocked = append(c.blocked[:i], c.blocked[i+1:]...)
			return
		}
	}
}

func (c *conn) writeFrameHeaderLocked(t http2.FrameType, flags http2.Flags, id uint32, n int) {
	var h [9]byte
	h[0], h[1], h[2] = byte(n>>16), byte(n>>8), byte(n)
	h[3], h[4] = byte(t), byte(flags)
	binary.BigEndian.PutUint32(h[5:], id)
	c.bw.Write(h[:])
}

// writeHeadersFrameLocked writes a header block; the blocks written here are
// far below the smallest frame size a client may set, so no CONTINUATION.
func (c *conn) writeHeadersFrameLocked(id uint32, block []byte, endStream bool) {
	flags := http2.FlagHeadersEndHeaders
	if endStream {
		flags |= http2.FlagHeadersEndStream
	}
	c.writeFrameHeaderLocked(http2.FrameHeaders, flags, id, len(block))
	c.bw.Write(block)
}

// goAway starts a graceful drain: a GOAWAY announcing the drain, then a PING;
// when the client acknowledges the PING, every stream it opened before has
// arrived, and the final GOAWAY names the last of them (as grpc-go does).
func (c *conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bw == nil {
		// Still in its prelude (nothing to drain: close it), or handed over
		// (the fallback server drains it).
		if !c.drainStarted && !c.handedOver.Load() {
			c.drainStarted = true
			c.nc.Close()
		}
		return
	}
	if c.drainStarted || c.closed {
		return
	}
	c.drainStarted = true
	c.fr.WriteGoAway(maxWindow, http2.ErrCodeNo, nil)
	var data [8]byte
	copy(data[:], goAwayPing)
	c.fr.WritePing(false, data)
	c.flushLocked()
	c.drainTimer = time.AfterFunc(c.srv.opts.DrainTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.goingAway && !c.closed {
			c.finalGoAwayLocked()
		}
	})
}

func (c *conn) finalGoAwayLocked() {
	c.goingAway = true
	if c.drainTimer != nil {
		c.drainTimer.Stop()
	}
	c.fr.WriteGoAway(c.maxStreamID, http2.ErrCodeNo, nil)
	c.flushIfIdleLocked()
	c.closeIfIdleLocked()
}

// closeIfIdleLocked closes a connection that is going away once its last
// stream ends.
func (c *conn) closeIfIdleLocked() {
	if c.goingAway && len(c.streams) == 0 && !c.closed {
		c.closed = true
		c.flushLocked()
		c.nc.Close()
	}
}

// close closes the connection unless it was handed over. It does not take
// c.mu: every write holds c.mu, so a write blocked on a client that stopped
// reading held Close and Shutdown forever; closing the connection is what
// unblocks that write.
func (c *conn) close() {
	if !c.handedOver.Load() {
		c.nc.Close()
	}
}

// end tears the connection down after the reading goroutine stopped: a
// protocol error is reported with GOAWAY; every stream's context is cancelled.
func (c *conn) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(err, http2.ErrFrameTooLarge) {
		err = http2.ConnectionError(http2.ErrCodeFrameSize) // RFC 9113 §4.2
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) && !c.closed {
		c.fr.WriteGoAway(c.maxStreamID, http2.ErrCode(ce), nil)
		c.flushLocked()
	} else if err != nil && !c.closed && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.srv.log.Debug("grpclite: connection ended", "remote", c.nc.RemoteAddr().String(), "error", err)
	}
	c.closed = true
	c.nc.Close()
	c.cancel()
	if c.drainTimer != nil {
		c.drainTimer.Stop()
	}
	for _, s := range c.streams {
		s.ended = true
		s.queue = nil
		s.out = nil
		c.maybeFinishLocked(s)
	}
}
