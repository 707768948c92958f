package grpclite

import (
	"bytes"
	"strconv"

	"golang.org/x/net/http2/hpack"
	grpcstatus "google.golang.org/grpc/status"
)

// gRPC status codes used here (google.golang.org/grpc/codes).
const (
	codeOK                = 0
	codeResourceExhausted = 8
	codeUnimplemented     = 12
	codeInternal          = 13
)

// status is what a stream ends with.
type status struct {
	code uint32
	msg  string
}

var statusOK = status{code: codeOK}

// statusOf maps a handler's error to its gRPC status; an error without one is
// UNKNOWN with the error's text.
func statusOf(err error) *status {
	st := grpcstatus.Convert(err)
	return &status{code: uint32(st.Code()), msg: st.Message()}
}

// maxStatusMessage bounds grpc-message, which keeps every header block written
// here within one frame.
const maxStatusMessage = 1024

// Header blocks that never change, encoded once. Every field is written
// "never indexed", so no block depends on HPACK's dynamic table and any block
// can be written in any order.
var (
	responseHeaders = encodeFields(":status", "200", "content-type", "application/grpc")
	okTrailers      = encodeFields("grpc-status", "0")
)

func encodeFields(kv ...string) []byte {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	for i := 0; i < len(kv); i += 2 {
		e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1], Sensitive: true})
	}
	return b.Bytes()
}

// trailerBlockLocked encodes the trailers for st; trailersOnly adds the
// response headers, for a stream that sent nothing before its status. The
// block is valid until the next call.
func (c *conn) trailerBlockLocked(st *status, trailersOnly bool) []byte {
	if !trailersOnly && st.code == codeOK && st.msg == "" {
		return okTrailers
	}
	c.hbuf.Reset()
	if trailersOnly {
		c.hbuf.Write(responseHeaders)
	}
	c.henc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: strconv.FormatUint(uint64(st.code), 10), Sensitive: true})
	if st.msg != "" {
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-message", Value: percentEncode(st.msg), Sensitive: true})
	}
	return c.hbuf.Bytes()
}

// percentEncode encodes grpc-message as the gRPC HTTP/2 protocol asks: bytes
// outside printable ASCII, and '%', as %XX.
func percentEncode(s string) string {
	if len(s) > maxStatusMessage {
		s = s[:maxStatusMessage]
	}
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 0x20 && ch <= 0x7e && ch != '%' {
			if b != nil {
				b = append(b, ch)
			}
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, len(s)+8), s[:i]...)
		}
		b = append(b, '%', hex[ch>>4], hex[ch&15])
	}
	if b == nil {
		return s
	}
	return string(b)
}
