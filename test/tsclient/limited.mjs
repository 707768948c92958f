// limited.mjs: what the TypeScript MCP SDK client shows its caller when the rate
// limiter rejects a tools/call. Run by test/integration/tsclient_test.go.
//
//   node limited.mjs URL TOOL MAX_CALLS
//
// Connects with StreamableHTTPClientTransport, calls TOOL until a call throws or
// returns isError (at most MAX_CALLS times), then checks that tools/list still works
// on the same session. Prints one JSON line on stdout:
//
//   {"sdkVersion":"1.32.2","okCalls":1,"limited":{...},"afterList":{"ok":true,"tools":3}}
//
// limited is {"kind":"error","class":...,"message":...,"code":...,"data":...} when
// callTool threw, {"kind":"result","isError":true,"text":...,"meta":{...}} when it
// returned an isError result, or null when no call was limited. Exit status 0
// unless the script itself failed (connect, bad arguments).
import { readFileSync } from 'node:fs';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, tool, maxArg] = process.argv.slice(2);
const maxCalls = Number.parseInt(maxArg ?? '10', 10);
if (!url || !tool || !(maxCalls > 0)) {
  console.error('usage: node limited.mjs URL TOOL MAX_CALLS');
  process.exit(2);
}

// The installed SDK's version, so the table in docs/responses.md names it. Read
// from the file: the package's exports map sends package.json to a stub in dist/.
const sdkPackage = new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url);
const sdkVersion = JSON.parse(readFileSync(sdkPackage, 'utf8')).version;

const argsFor = {
  echo: { text: 'hi' },
  search: { query: 'q' },
  slow: { milliseconds: 1 },
};

// describeError keeps what a caller can read off the thrown value.
function describeError(err) {
  return {
    kind: 'error',
    class: err?.constructor?.name ?? typeof err,
    message: String(err?.message ?? err),
    code: err?.code ?? null,
    data: err?.data ?? null,
  };
}

const client = new Client({ name: 'integration-ts', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  // No reconnection attempts: a rejection must surface as it is.
  reconnectionOptions: { maxReconnectionDelay: 1000, initialReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1, maxRetries: 0 },
});
await client.connect(transport);

let okCalls = 0;
let limited = null;
for (let i = 0; i < maxCalls && limited === null; i++) {
  try {
    const res = await client.callTool({ name: tool, arguments: argsFor[tool] ?? {} });
    if (res.isError) {
      limited = {
        kind: 'result',
        isError: true,
        text: res.content?.map((c) => c.text ?? '').join('') ?? '',
        meta: res._meta ?? null,
        resultType: res.resultType ?? null,
      };
    } else {
      okCalls++;
    }
  } catch (err) {
    limited = describeError(err);
  }
}

let afterList;
try {
  const { tools } = await client.listTools();
  afterList = { ok: true, tools: tools.length };
} catch (err) {
  afterList = { ok: false, error: describeError(err) };
}

console.log(JSON.stringify({ sdkVersion, okCalls, limited, afterList }));
await client.close();
