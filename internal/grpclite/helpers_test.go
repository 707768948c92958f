package grpclite

import (
	"context"
	"testing"

	"go.uber.org/goleak"
)

// Test helpers shared by this package's tests and grpclite_test's (which sees
// them because they are exported from a _test.go file of the package).

// CheckLeaks fails the test if goroutines started during it outlive it. Call
// it first, so that its cleanup runs after every other.
func CheckLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// HandlerFuncs is a StreamHandler made of functions; OnDone may be nil.
type HandlerFuncs struct {
	OnMessage func(msg []byte, reply func([]byte, error))
	OnDone    func()
}

func (h *HandlerFuncs) Message(msg []byte, reply func([]byte, error)) { h.OnMessage(msg, reply) }

func (h *HandlerFuncs) Done() {
	if h.OnDone != nil {
		h.OnDone()
	}
}

// Echo opens streams that answer each message with itself.
func Echo(context.Context) StreamHandler {
	return &HandlerFuncs{OnMessage: func(msg []byte, reply func([]byte, error)) { reply(msg, nil) }}
}
