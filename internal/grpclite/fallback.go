package grpclite

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
)

// fallbackListener hands over connections whose first stream is not for
// Method, each replaying the bytes already read from it.
type fallbackListener struct {
	ch        chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newFallbackListener() *fallbackListener {
	return &fallbackListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *fallbackListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fallbackListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *fallbackListener) Addr() net.Addr { return fallbackAddr{} }

// handOver passes c to whoever accepts, or closes it if the listener is closed
// first (or nobody serves it).
func (l *fallbackListener) handOver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

type fallbackAddr struct{}

func (fallbackAddr) Network() string { return "grpclite-fallback" }
func (fallbackAddr) String() string  { return "grpclite-fallback" }

// replayConn reads what was already read from the connection before reading
// more from it.
type replayConn struct {
	net.Conn
	r io.Reader
}

func newReplayConn(c net.Conn, read []byte) *replayConn {
	return &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(read), c)}
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// recorder keeps a copy of every byte read through it until stopped, so that a
// connection can be handed to the fallback as it arrived.
type recorder struct {
	r   io.Reader
	buf []byte
	on  bool
}

// errPreludeTooLong ends a connection whose first stream does not arrive
// within maxPreludeBytes.
var errPreludeTooLong = errors.New("no stream within the first bytes")

func (r *recorder) Read(p []byte) (int, error) {
	// Bounded here, not only between frames by prelude: one frame (a HEADERS
	// continued by endless CONTINUATION frames of HPACK table size updates,
	// which never reach the header list limit) made ReadFrame read, and the
	// recorder keep, an unbounded number of bytes.
	if r.on && len(r.buf) > maxPreludeBytes {
		return 0, errPreludeTooLong
	}
	n, err := r.r.Read(p)
	if r.on && n > 0 {
		r.buf = append(r.buf, p[:n]...)
	}
	return n, err
}
