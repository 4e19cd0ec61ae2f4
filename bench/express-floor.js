// The floor of any Express app on this machine: the baseline's queries (reference.js) behind the
// smallest Express app that serves them, one route each, no other middleware. What it costs over
// the baseline is what Express itself costs, before any of sitelog's own work.
const express = require('express');
const { authorized, firstPage, insertEntry, oneEntry, ready } = require('./reference.js');

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.use((req, res, next) => (authorized(req) ? next() : res.status(401).json({ error: { code: 'UNAUTHORIZED' } })));
app.get('/api/logs', async (_req, res) => {
  res.json(await firstPage());
});
app.get('/api/logs/:id', async (req, res) => {
  const entry = await oneEntry(req.params.id);
  if (entry) res.json(entry);
  else res.status(404).json({ error: { code: 'NOT_FOUND' } });
});
app.post('/api/logs', express.json(), async (req, res) => {
  res.status(201).json(await insertEntry(req.body, req.socket.remoteAddress, req.get('user-agent')));
});
app.use((_err, _req, res, _next) => res.status(500).json({ error: { code: 'INTERNAL' } }));
app.listen(Number(process.env.PORT), '127.0.0.1', ready);
