// Command extproc is an Envoy ext_proc external processor that rate-limits MCP
// (Model Context Protocol) JSON-RPC traffic with token buckets in Redis or memory.
//
// Run "extproc help" for its flags and subcommands (docs/operations.md, "Command line").
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Once the first signal has started the graceful shutdown, restore the default
	// handling so that a second SIGINT or SIGTERM kills the process at once.
	context.AfterFunc(ctx, stop)

	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.As(err, new(usageError)) {
			fmt.Fprintln(os.Stderr, `Run "extproc help" for usage.`)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for a command-line mistake, 1 for any other failure and 0 for
// success.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.As(err, new(usageError)):
		return 2
	default:
		return 1
	}
}
