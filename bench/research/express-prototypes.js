// What Express costs a request, and how much of it is Object.setPrototypeOf (src/app.ts,
// requestClasses). One process per way of serving the same answer, one route after one middleware,
// 32 connections from autocannon for 6 s after 2 s of warm-up; the CPU of the serving process per
// request, from process.cpuUsage(). Nothing but loopback and this machine.
//
//   node bench/research/express-prototypes.js            each way twice, in turn
//   node bench/research/express-prototypes.js serve WAY  one server (used by the above)
//
// Ways: `node:http` alone; `express`, as Express sets it up (each request and response gets the
// app's prototypes as it enters app.handle); `express+classes`, the same app behind an http server
// that builds its requests and responses with those prototypes already (what sitelog does).
const { fork } = require('node:child_process');
const http = require('node:http');

const WAYS = ['node:http', 'express', 'express+classes'];
const body = JSON.stringify({ id: 1, stype: 'app', timestamp: '2026-11-29T15:00:00.000Z', description: 'an entry of about the size of the bench', ip: '127.0.0.1', user_agent: 'autocannon', host: 'bench', instance: 0, request_id: '6f1d0c38-6d8f-4d55-9d1e-5f0e1a2b3c4d' });

function answer(_req, res) {
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/** The server of one way, listening on an ephemeral loopback port. */
function serve(way) {
  if (way === 'node:http') return http.createServer(answer);
  const express = require('express');
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', false);
  app.use((_req, _res, next) => next());
  app.get('/api/logs/:id', answer);
  if (way === 'express') return http.createServer(app);
  // as src/app.ts's requestClasses
  class AppRequest extends http.IncomingMessage {}
  class AppResponse extends http.ServerResponse {}
  Object.setPrototypeOf(AppRequest.prototype, app.request);
  Object.setPrototypeOf(AppResponse.prototype, app.response);
  app.request = AppRequest.prototype;
  app.response = AppResponse.prototype;
  return http.createServer({ IncomingMessage: AppRequest, ServerResponse: AppResponse }, app);
}

async function measure(way) {
  const autocannon = require('autocannon');
  const child = fork(__filename, ['serve', way]);
  try {
    const { port } = await new Promise((resolve) => child.once('message', resolve));
    const url = `http://127.0.0.1:${port}/api/logs/5`;
    await autocannon({ url, connections: 32, duration: 2 });
    const cpu = async () => {
      child.send('cpu');
      return (await new Promise((resolve) => child.once('message', resolve))).cpu;
    };
    const before = await cpu();
    const result = await autocannon({ url, connections: 32, duration: 6 });
    const spent = (await cpu()) - before;
    return { way, rps: Math.round(result.requests.average), cpuUs: spent / result.requests.total, non2xx: result.non2xx };
  } finally {
    child.kill();
  }
}

async function main() {
  if (process.argv[2] === 'serve') {
    const server = serve(process.argv[3]).listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
    process.on('message', () => {
      const { user, system } = process.cpuUsage();
      process.send({ cpu: user + system });
    });
    return;
  }
  console.log('| way | req/s | CPU µs/request | non-2xx |\n|---|---|---|---|');
  for (let round = 0; round < 2; round++) {
    for (const way of WAYS) {
      const r = await measure(way);
      console.log(`| ${r.way} | ${r.rps} | ${r.cpuUs.toFixed(1)} | ${r.non2xx} |`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
