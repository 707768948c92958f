package grpclite

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// seedFrames returns the frames write writes, as a client sends them after its
// preface.
func seedFrames(write func(fr *http2.Framer, block func(path string) []byte)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	enc := hpack.NewEncoder(&hb)
	write(fr, func(path string) []byte {
		hb.Reset()
		for _, f := range requestFields(path) {
			enc.WriteField(f)
		}
		return bytes.Clone(hb.Bytes())
	})
	return out.Bytes()
}

func fuzzSeeds() [][]byte {
	open := func(fr *http2.Framer, block []byte, id uint32, end bool) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true, EndStream: end})
	}
	return [][]byte{
		// One call, one message.
		seedFrames(func(fr *http2.Framer, block func(string) []byte) {
			fr.WriteSettings()
			open(fr, block(rawMethod), 1, false)
			fr.WriteData(1, true, grpcMessage(0, []byte("hello")))
		}),
		// Replies waiting for window; a compressed message; stray bytes.
		seedFrames(func(fr *http2.Framer, block func(string) []byte) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			open(fr, block(rawMethod), 1, false)
			fr.WriteData(1, false, grpcMessage(0, nil))
			fr.WriteData(1, false, grpcMessage(0, []byte("odd")))
			fr.WriteData(1, false, grpcMessage(1, []byte("z")))
			fr.WriteData(1, false, []byte{0})
			fr.WriteWindowUpdate(1, 100)
			fr.WriteWindowUpdate(0, 100)
			fr.WritePing(false, [8]byte{1})
		}),
		// Several streams: another method, a reset, an error, a GOAWAY.
		seedFrames(func(fr *http2.Framer, block func(string) []byte) {
			open(fr, block(rawMethod), 1, false)
			open(fr, block("/other.Service/Method"), 3, true)
			msgs := append(grpcMessage(0, []byte("a")), grpcMessage(0, []byte("Error"))...)
			fr.WriteData(1, false, msgs[:3])
			fr.WriteData(1, false, msgs[3:])
			open(fr, block(rawMethod), 5, false)
			fr.WriteDataPadded(5, false, grpcMessage(0, []byte("padded")), make([]byte, 7))
			fr.WriteRSTStream(5, http2.ErrCodeCancel)
			open(fr, block(rawMethod), 7, true)
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}),
		// A first call for another method: the fallback's.
		seedFrames(func(fr *http2.Framer, block func(string) []byte) {
			fr.WriteSettings()
			open(fr, block("/grpc.health.v1.Health/Check"), 1, false)
			fr.WriteData(1, true, grpcMessage(0, nil))
		}),
		// Headers in CONTINUATION frames, settings changes, a drain's PING ack.
		seedFrames(func(fr *http2.Framer, block func(string) []byte) {
			b := block(rawMethod)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:4]})
			fr.WriteContinuation(1, false, b[4:8])
			fr.WriteContinuation(1, true, b[8:])
			fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14},
				http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
			fr.WriteData(1, false, grpcMessage(0, bytes.Repeat([]byte("x"), 40)))
			fr.WritePing(true, [8]byte([]byte(goAwayPing)))
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			fr.WriteData(1, true, nil)
		}),
	}
}

// FuzzConn feeds arbitrary bytes after the client preface to one connection
// served by an echoing handler. The connection must not panic, must keep the
// StreamHandler contract (one message at a time, Done once per stream), and
// its goroutine must end once the client has closed.
func FuzzConn(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var opened, done atomic.Int32
		s := New(Options{
			Method:               rawMethod,
			Logger:               slog.New(slog.DiscardHandler),
			MaxMessageBytes:      1 << 16,
			ConnWindow:           1 << 18,
			MaxConcurrentStreams: 8,
			Handler: func(ctx context.Context) StreamHandler {
				opened.Add(1)
				var busy, ended atomic.Bool
				return &HandlerFuncs{
					OnMessage: func(msg []byte, reply func([]byte, error)) {
						if !busy.CompareAndSwap(false, true) {
							t.Error("Message called before the previous message was answered")
						}
						if ended.Load() {
							t.Error("Message called after Done")
						}
						answer := func() {
							busy.Store(false)
							if bytes.HasPrefix(msg, []byte("Error")) {
								reply(nil, errors.New(string(msg)))
								return
							}
							reply(msg, nil)
						}
						if len(msg)%2 == 1 {
							go answer()
							return
						}
						answer()
					},
					OnDone: func() {
						if busy.Load() {
							t.Error("Done called while a message is unanswered")
						}
						if !ended.CompareAndSwap(false, true) {
							t.Error("Done called twice")
						}
						done.Add(1)
					},
				}
			},
		})
		s.fallback.Close() // a connection handed over is closed at once

		srv, cli := net.Pipe()
		c := newConn(s, srv)
		served := make(chan struct{})
		go func() {
			defer close(served)
			c.serve()
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, cli)
		}()
		// The server may close first, and the write fail: that is fine.
		cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
		cli.Write(append([]byte(http2.ClientPreface), in...))
		cli.Close()

		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("connection still served 10s after the client closed it")
		}
		<-drained
		if o, d := opened.Load(), done.Load(); o != d {
			t.Errorf("handler opened %d streams and Done was called %d times, want as many", o, d)
		}
	})
}
