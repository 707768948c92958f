// The Node.js readings of a request body, for the differential test
// (differential_test.go): what a TypeScript SDK server sees in the bytes.
//
//   node reader.mjs     reads requests from stdin, one JSON line each, and
//                       answers each with one JSON line on stdout, in order
//
// A request is {"body": base64, "charsets": ["", "utf-16le", ...]}. The answer:
//   {"textdecoder": R, "iconv": {"": R, "utf-16le": R, ...}}
// where a reading R is {"ok": bool, "calls": [{"method", "name", "illFormed"}],
// "err"}.
//
//   textdecoder  the SDK 1.32.2 Streamable HTTP transport (readRequestBody):
//                new TextDecoder() (UTF-8, invalid bytes become U+FFFD, one
//                leading BOM dropped) then JSON.parse, whatever the charset.
//   iconv        Express's JSON parser (body-parser) and the SDK's SSE
//                transport (raw-body): iconv-lite decodes with the declared
//                charset (UTF-8 when none, "" here), dropping a BOM, then
//                JSON.parse.
//
// A call is what the SDK could run: an object whose jsonrpc is "2.0" and whose
// method is a string; its name is params.name when that is a string. That is
// looser than the SDK's strict zod schemas, on purpose: the test asks that the
// limiter charge every call a server could run, so counting more is safe.
import { createInterface } from 'node:readline';
import iconv from 'iconv-lite';

// text returns a call's method and name as they cross to Go: a lone surrogate
// becomes U+FFFD (JSON cannot carry it to Go) and illFormed says one was
// there, because such a name is no tool a policy (UTF-8 YAML) can name. A real
// pair, an astral character, stays as it is.
const text = (method, name) => ({
  method: method.toWellFormed(),
  name: name.toWellFormed(),
  illFormed: !method.isWellFormed() || !name.isWellFormed(),
});

function callsOf(value) {
  const elements = Array.isArray(value) ? value : [value];
  const calls = [];
  for (const m of elements) {
    if (m === null || typeof m !== 'object' || Array.isArray(m)) continue;
    if (m.jsonrpc !== '2.0' || typeof m.method !== 'string') continue;
    const p = m.params;
    const hasName = p !== null && typeof p === 'object' && !Array.isArray(p) && typeof p.name === 'string';
    calls.push(text(m.method, hasName ? p.name : ''));
  }
  return calls;
}

function read(decode) {
  try {
    return { ok: true, calls: callsOf(JSON.parse(decode())) };
  } catch (e) {
    return { ok: false, calls: [], err: String(e && e.message).slice(0, 200) };
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  const req = JSON.parse(line);
  const bytes = Buffer.from(req.body, 'base64');
  const answer = {
    textdecoder: read(() => new TextDecoder().decode(bytes)),
    iconv: {},
  };
  for (const cs of req.charsets ?? []) {
    answer.iconv[cs] = read(() => {
      const charset = cs === '' ? 'utf-8' : cs;
      if (!iconv.encodingExists(charset)) throw new Error(`unsupported charset ${charset}`);
      return iconv.decode(bytes, charset);
    });
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
