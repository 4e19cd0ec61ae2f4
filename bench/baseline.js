// The practical limit on this machine: node:http + pg, no framework, no ORM, the same queries as
// sitelog's hot routes. Run by PM2 in cluster mode with the same instance count.
const http = require('node:http');
const { authorized, firstPage, insertEntry, oneEntry, ready } = require('./reference.js');

const send = (res, status, body) => {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
};

http
  .createServer(async (req, res) => {
    try {
      if (!authorized(req)) return send(res, 401, { error: { code: 'UNAUTHORIZED' } });
      const url = new URL(req.url, 'http://x');
      if (req.method === 'GET' && url.pathname === '/api/logs') return send(res, 200, await firstPage());
      const one = url.pathname.match(/^\/api\/logs\/(\d+)$/);
      if (req.method === 'GET' && one) {
        const entry = await oneEntry(one[1]);
        return entry ? send(res, 200, entry) : send(res, 404, { error: { code: 'NOT_FOUND' } });
      }
      if (req.method === 'POST' && url.pathname === '/api/logs') {
        let raw = '';
        for await (const chunk of req) raw += chunk;
        return send(res, 201, await insertEntry(JSON.parse(raw), req.socket.remoteAddress, req.headers['user-agent']));
      }
      send(res, 404, { error: { code: 'NOT_FOUND' } });
    } catch {
      send(res, 500, { error: { code: 'INTERNAL' } });
    }
  })
  .listen(Number(process.env.PORT), '127.0.0.1', ready);
