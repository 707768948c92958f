"""The Python readings of a request body, for the differential test
(differential_test.go): what a Python SDK (mcp 2.3.0) server sees in the bytes.

    python3 reader.py   first prints {"ready": ..., versions}, then reads
                        requests from stdin, one JSON line each, and answers
                        each with one JSON line on stdout, in order

A request is {"body": base64}. The answer: {"json": R, "pydantic": R}, where a
reading R is {"ok": bool, "calls": [{"method", "name", "illFormed"}],
"err"}.

    json      the Streamable HTTP server's modern path: json.loads on the
              bytes, which picks UTF-8, UTF-16 or UTF-32 from the first bytes
              (whatever the declared charset), drops a BOM, keeps lone
              surrogates and accepts NaN, Infinity and huge numbers.
    pydantic  the legacy path: pydantic_core.from_json on the bytes.

A call is what the SDK could run: a dict whose jsonrpc is "2.0" and whose
method is a str; its name is params["name"] when that is a str. Batch elements
count too, though the SDK refuses batches: counting more is safe, the test only
asks that the limiter charge every call a server could run.
"""

import base64
import json
import sys

try:
    import pydantic_core
except ImportError:  # the Go test fails under CI, skips elsewhere
    pydantic_core = None


def is_surrogate(c):
    return 0xD800 <= ord(c) <= 0xDFFF


def text(method, name):
    """A call's method and name as they cross to Go.

    A surrogate (json.loads keeps them, lone or paired, as separate code
    points) becomes U+FFFD rather than half a pair that json.dumps and Go's
    decoder would join into a character Python never saw, and ill_formed says
    one was there: such a name is no tool a policy (UTF-8 YAML) can name.
    """
    ill = any(is_surrogate(c) for c in method + name)
    fix = lambda s: "".join("\ufffd" if is_surrogate(c) else c for c in s)
    return {"method": fix(method), "name": fix(name), "illFormed": ill}


def calls_of(value):
    elements = value if isinstance(value, list) else [value]
    calls = []
    for m in elements:
        if not isinstance(m, dict):
            continue
        if m.get("jsonrpc") != "2.0" or not isinstance(m.get("method"), str):
            continue
        p = m.get("params")
        name = p.get("name") if isinstance(p, dict) else None
        calls.append(text(m["method"], name if isinstance(name, str) else ""))
    return calls


def read(parse, body):
    try:
        return {"ok": True, "calls": calls_of(parse(body))}
    except (ValueError, RecursionError) as e:
        return {"ok": False, "calls": [], "err": str(e)[:200]}


def main():
    ready = {
        "ready": pydantic_core is not None,
        "python": sys.version.split()[0],
        "pydantic_core": getattr(pydantic_core, "__version__", ""),
    }
    print(json.dumps(ready), flush=True)
    if pydantic_core is None:
        return
    for line in sys.stdin:
        body = base64.b64decode(json.loads(line)["body"])
        answer = {
            "json": read(json.loads, body),
            "pydantic": read(pydantic_core.from_json, body),
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
