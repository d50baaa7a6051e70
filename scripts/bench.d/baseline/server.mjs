// Baseline for scripts/bench: the reference media proxy's (misskey-dev/
// media-proxy) image pipelines with the same sharp options, in the smallest
// Node server that runs them. It is deliberately lighter than the reference
// (no Fastify, no temp file, no file-type sniffing, no SSRF checks), so the
// comparison favours the baseline, never us.
//
//   PORT=3001 node server.mjs
//
// GET /                         health text
// GET /x.webp?url=U&emoji=1     WebP at most 128 px high, animation kept
// GET /x.webp?url=U&avatar=1    WebP at most 320 px high, animation kept
// GET /x.webp?url=U             the fetched bytes, streamed
//
// It listens on 127.0.0.1 only.
import http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { resizeToHeight } from './pipeline.mjs';

const port = Number(process.env.PORT || 3001);

async function handle(req, res) {
  const u = new URL(req.url, 'http://127.0.0.1');
  if (u.pathname === '/') {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('baseline is running\n');
    return;
  }
  const src = u.searchParams.get('url');
  if (!src) {
    res.writeHead(400).end();
    return;
  }
  const q = u.searchParams;
  const height = q.has('emoji') ? 128 : q.has('avatar') ? 320 : 0;

  const r = await fetch(src);
  if (!r.ok) {
    await r.body?.cancel();
    res.writeHead(r.status >= 500 ? 502 : r.status).end();
    return;
  }

  if (height === 0) {
    // Passthrough: stream the fetched bytes.
    const headers = { 'Content-Type': r.headers.get('content-type') || 'application/octet-stream' };
    const len = r.headers.get('content-length');
    if (len) headers['Content-Length'] = len;
    res.writeHead(200, headers);
    await pipeline(Readable.fromWeb(r.body), res);
    return;
  }

  const buf = Buffer.from(await r.arrayBuffer());
  const out = await resizeToHeight(buf, height);
  res.writeHead(200, {
    'Content-Type': 'image/webp',
    'Content-Length': out.length,
    'Cache-Control': 'max-age=31536000, immutable',
  });
  res.end(out);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(err?.message ?? err);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1');

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
