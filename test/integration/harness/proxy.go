package harness

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DelayProxy is a TCP proxy that holds every byte coming back from its target for
// a settable delay: a slow Redis, seen from extproc, without touching Redis. Bytes
// towards the target pass at once, and the delay shifts replies in time without
// slowing their throughput (each chunk is due at its arrival time plus the delay).
type DelayProxy struct {
	// Addr is where clients connect: 127.0.0.1:port.
	Addr   string
	target string
	delay  atomic.Int64 // time.Duration
	lis    net.Listener

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartDelayProxy listens on a free loopback port and forwards to target, with no
// delay until SetDelay; it is closed in tb.Cleanup.
func StartDelayProxy(tb testing.TB, target string) *DelayProxy {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("delay proxy: %v", err)
	}
	p := &DelayProxy{Addr: lis.Addr().String(), target: target, lis: lis, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// SetDelay sets how long replies are held from now on.
func (p *DelayProxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return // closed
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			return
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(up, c)
			closeWrite(up)
		}()
		go func() {
			defer p.wg.Done()
			p.copyDelayed(c, up)
			closeWrite(c)
		}()
	}
}

// track registers both ends for close; false when the proxy is closing.
func (p *DelayProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

type chunk struct {
	b   []byte
	due time.Time
}

// copyDelayed copies src to dst, writing each chunk read at t no earlier than
// t + the delay at that moment.
func (p *DelayProxy) copyDelayed(dst, src net.Conn) {
	chunks := make(chan chunk, 64)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{buf[:n], time.Now().Add(time.Duration(p.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d) // the delay is what this proxy is for
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close() // unblocks the reader, which then closes chunks
			for range chunks {
			}
			return
		}
	}
}

// closeWrite passes a half-close on, so each side sees the other's EOF.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *DelayProxy) close() {
	p.lis.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
