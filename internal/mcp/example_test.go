package mcp_test

import (
	"fmt"

	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

func Example() {
	body, err := mcp.Parse([]byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	m := body.Messages[0]
	fmt.Println(m.Method, m.Name, string(m.ID))

	fmt.Printf("%s\n", mcp.RejectionBody(body, mcp.Rejection{
		Code: -32029, Message: "Rate limit exceeded", RetryAfterSeconds: 20, RetryAfterMs: 19500, Limit: "tool:search", Scope: "perUser",
	}))
	// Output:
	// tools/call search 7
	// {"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":20,"retryAfterMs":19500,"limit":"tool:search","scope":"perUser"}}}
}
