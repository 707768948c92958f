package processor

// growStack makes the runtime move the calling goroutine to a stack of 16 KiB in
// one step, while the stack is still shallow.
//
// grpc-go runs each stream, and Stream each decision, on a new goroutine,
// which starts with a small stack.
// A decision on Redis goes deep (go-redis's pool, hooks and retries), and each
// time the stack fills the runtime copies it to one twice the size, walking
// every frame: a CPU profile of extproc under load through Envoy spent about
// 11% of its time in runtime.copystack, most of it under go-redis. An 8 KiB
// frame at the top of the stream costs one copy of a few frames instead (3%),
// and no growth follows. The price is 16 KiB of stack per open stream: 16 MiB
// for a thousand requests being decided at once. (A 16 KiB frame, for a 32 KiB
// stack, cost more: stacks of 32 KiB and up are not cached per P.)
//
//go:noinline
func growStack() {
	var buf [8 << 10]byte
	keepFrame(buf[:])
}

// keepFrame keeps growStack's array, and so its frame, from being optimised away.
//
//go:noinline
func keepFrame([]byte) {}
