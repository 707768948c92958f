// A stateless MCP server built with the TypeScript SDK (@modelcontextprotocol/sdk),
// for the integration suite to put behind Envoy (test/integration/harness,
// StartTSServer). It serves the Go demo server's tools (test/mcpserver/demo: echo,
// search, slow) and counts the calls that reached each tool's handler, so a test
// can tell a call the limiter let through from one it stopped, as this SDK read it.
//
//   node server.mjs PORT     listens on 127.0.0.1:PORT
//
// Besides MCP, on the same port:
//   GET /healthz   200 "ok" once listening (the harness's readiness check)
//   GET /calls     the counts so far, e.g. {"search":2}; a tool never called is absent
//
// Every other path serves MCP. Each POST gets a new McpServer and a new
// StreamableHTTPServerTransport without sessions (sessionIdGenerator: undefined), as
// the SDK's stateless example (simpleStatelessStreamableHttp) does. Unlike that
// example, it runs on node:http rather than Express and hands the transport no
// parsed body: the transport reads the raw request itself, so what runs is the
// SDK's own reading of the bytes Envoy forwarded, not a body parser's.
import http from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import * as z from 'zod/v4';

// maxSlowMs bounds the slow tool, as the Go demo server does, so that no test or
// curl holds a handler forever.
const maxSlowMs = 10_000;

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`usage: node server.mjs PORT (got ${JSON.stringify(process.argv[2])})`);
  process.exit(2);
}

// calls: tool name -> calls that reached its handler, for GET /calls.
const calls = {};
const count = (tool) => {
  calls[tool] = (calls[tool] ?? 0) + 1;
};

const text = (s) => ({ content: [{ type: 'text', text: s }] });

// newServer builds the MCP server for one request; the counts outlive it.
function newServer() {
  const server = new McpServer({ name: 'mcp-ratelimit-tsserver', version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'Returns its text.', inputSchema: { text: z.string().describe('the text to send back') } },
    async ({ text: t }) => {
      count('echo');
      return text(t);
    },
  );
  server.registerTool(
    'search',
    {
      description: 'Pretends to search; returns three made-up hits.',
      inputSchema: { query: z.string().describe('what to look for') },
    },
    async ({ query }) => {
      count('search');
      return text([1, 2, 3].map((i) => `${i}. result for ${JSON.stringify(query)}`).join('\n'));
    },
  );
  server.registerTool(
    'slow',
    {
      description: 'Waits, then answers; for timeouts and concurrency.',
      inputSchema: {
        milliseconds: z.number().int().describe('how long to wait before answering, at most 10000'),
      },
    },
    async ({ milliseconds }, extra) => {
      count('slow');
      const ms = Math.max(0, Math.min(milliseconds, maxSlowMs));
      // The signal aborts when the client goes away (Envoy's timeout, say), so the
      // handler ends with the request as the Go demo server's does.
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        extra.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          reject(new Error(`slow: ${extra.signal.reason ?? 'aborted'}`));
        });
      });
      return text(`waited ${ms}ms`);
    },
  );
  return server;
}

function sendJSON(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function serveMCP(req, res) {
  if (req.method !== 'POST') {
    // Without sessions there is no stream to GET and nothing to DELETE; the SDK's
    // stateless example answers 405 the same way.
    sendJSON(res, 405, { jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null });
    return;
  }
  const server = newServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res);
  } catch (err) {
    console.error('MCP request failed:', err);
    if (!res.headersSent) {
      sendJSON(res, 500, { jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null });
    }
  }
}

const httpServer = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (req.method === 'GET' && path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    return;
  }
  if (req.method === 'GET' && path === '/calls') {
    sendJSON(res, 200, calls);
    return;
  }
  serveMCP(req, res);
});

// The harness stops every process with SIGTERM; close the listener and any open
// connections so the process exits at once instead of being killed after the
// harness's stop budget.
process.on('SIGTERM', () => {
  httpServer.close(() => process.exit(0));
  httpServer.closeAllConnections();
});

httpServer.listen(port, '127.0.0.1', () => {
  console.log(`mcp-ratelimit-tsserver listening on 127.0.0.1:${port}`);
});
