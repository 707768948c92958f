"""What the Python MCP SDK client shows its caller when the rate limiter rejects
a tools/call. Run by test/integration/pyclient_test.go.

    python3 limited.py URL TOOL MAX_CALLS

Connects with the SDK's Streamable HTTP client (PyPI mcp 2.3.0:
streamable_http_client + ClientSession), calls TOOL until a call raises or
returns isError (at most MAX_CALLS times), then checks that tools/list still
works on the same session. Prints one JSON line on stdout:

    {"sdkVersion":"2.3.0","okCalls":1,"limited":{...},"afterList":{"ok":true,"tools":3}}

limited is {"kind":"error","class":...,"message":...,"code":...,"data":...} when
call_tool raised, {"kind":"result","isError":true,"text":...,"meta":{...}} when
it returned an isError result, or null when no call was limited. Exit status 0
unless the script itself failed (connect, bad arguments).
"""

import json
import sys
from importlib.metadata import version

import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

ARGS_FOR = {
    "echo": {"text": "hi"},
    "search": {"query": "q"},
    "slow": {"milliseconds": 1},
}

# A limited call is answered at once; the bound only keeps a hang from
# outliving the Go test's own timeout.
CALL_TIMEOUT_SECONDS = 10


def describe_error(err):
    """What a caller can read off the raised exception."""
    code = getattr(err, "code", None)
    data = getattr(err, "data", None)
    return {
        "kind": "error",
        "class": type(err).__name__,
        "message": str(getattr(err, "message", err)),
        "code": code if isinstance(code, (int, str)) else None,
        "data": data if isinstance(data, (dict, list, str, int, float)) else None,
    }


def describe_result(res):
    text = "".join(getattr(c, "text", "") for c in res.content)
    return {
        "kind": "result",
        "isError": True,
        "text": text,
        "meta": res.meta,
    }


async def main(url, tool, max_calls):
    ok_calls = 0
    limited = None
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT_SECONDS) as session:
            await session.initialize()
            for _ in range(max_calls):
                try:
                    res = await session.call_tool(tool, ARGS_FOR.get(tool, {}))
                except Exception as err:  # the point is to report whatever it raised
                    limited = describe_error(err)
                    break
                if res.is_error:
                    limited = describe_result(res)
                    break
                ok_calls += 1
            try:
                listed = await session.list_tools()
                after_list = {"ok": True, "tools": len(listed.tools)}
            except Exception as err:
                after_list = {"ok": False, "error": describe_error(err)}
    print(
        json.dumps(
            {"sdkVersion": version("mcp"), "okCalls": ok_calls, "limited": limited, "afterList": after_list},
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 4 or not sys.argv[3].isdigit() or int(sys.argv[3]) < 1:
        print("usage: python3 limited.py URL TOOL MAX_CALLS", file=sys.stderr)
        sys.exit(2)
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
