// The Instances page, live: the table of every host's instances (GET /api/instances) and this
// host's instances with their last 10 minutes (GET /api/instances/live), both every 2 s. The JSON
// API accepts the console's session cookie.
(function () {
  var EVERY_MS = 2000;
  var WINDOW_MS = 10 * 60 * 1000;
  var esc = function (s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  };
  var time = function (iso) { return esc(iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')); };
  var mb = function (n) { return (n / 1048576).toFixed(1) + ' MB'; };
  var getJson = function (url) {
    return fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  };

  var instances = document.getElementById('instances');
  function refreshInstances() {
    getJson('/api/instances').then(function (data) {
      var rows = data.items.map(function (r) {
        return '<tr><td>' + esc(r.host) + '</td><td>' + r.instance + '</td><td>' + r.pid + '</td><td><time>' + time(r.started_at) +
          '</time></td><td><time>' + time(r.last_seen) + '</time></td><td>' + r.restarts + '</td><td>' + mb(r.rss) + '</td></tr>';
      });
      instances.tBodies[0].innerHTML = rows.join('') || '<tr><td colspan="7">No instance is alive.</td></tr>';
      instances.dataset.refreshed = String(Date.now());
    }).catch(function () { /* the next tick tries again */ });
  }

  // The live table's columns: the sample's field, how a value reads, and the sparkline's floor (a
  // flat line near zero must not look like a spike).
  var COLUMNS = [
    { field: 'cpu', show: function (v) { return (v * 100).toFixed(0) + ' %'; }, floor: 1 },
    { field: 'rss', show: mb, floor: 64 * 1048576 },
    { field: 'rps', show: function (v) { return v.toFixed(v < 10 ? 1 : 0); }, floor: 10 },
    { field: 'p99', show: function (v) { return v === null ? '–' : v.toFixed(v < 10 ? 1 : 0) + ' ms'; }, floor: 10 },
    { field: 'errorsPerMin', show: function (v) { return String(v); }, floor: 5 },
    { field: 'loopLag', show: function (v) { return v.toFixed(1) + ' ms'; }, floor: 20 },
    { field: 'poolInUse', show: function (v) { return String(v); }, floor: 4 }
  ];

  /** The last 10 minutes of one field as an SVG polyline, newest at the right edge. */
  function sparkline(samples, column, now) {
    var values = samples.map(function (s) { return s[column.field] === null ? 0 : s[column.field]; });
    var peak = Math.max.apply(null, [0].concat(values));
    var max = Math.max(column.floor, peak);
    var points = samples.map(function (s, i) {
      var x = 120 - ((now - s.t) / WINDOW_MS) * 120;
      var y = 22 - (values[i] / max) * 20;
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    return '<svg class="spark" viewBox="0 0 120 24" role="img" aria-label="last 10 minutes, peak ' + esc(column.show(peak)) +
      '"><line class="base" x1="0" x2="120" y1="22.5" y2="22.5"/><polyline points="' + points.join(' ') + '"/></svg>';
  }

  function liveRow(head, samples, now, tag) {
    var last = samples[samples.length - 1];
    var cells = COLUMNS.map(function (column) {
      return '<td><span class="value">' + (last ? esc(column.show(last[column.field])) : '–') + '</span>' + sparkline(samples, column, now) + '</td>';
    });
    return '<tr>' + head.map(function (h) { return '<' + tag + '>' + esc(h) + '</' + tag + '>'; }).join('') + cells.join('') + '</tr>';
  }

  var live = document.getElementById('live');
  function refreshLive() {
    getJson('/api/instances/live').then(function (data) {
      var now = Date.now();
      var rows = data.instances.map(function (i) { return liveRow([String(i.instance), String(i.pid)], i.samples, now, 'td'); });
      live.tBodies[0].innerHTML = rows.join('') || '<tr><td colspan="9">No instance of this host answers.</td></tr>';
      live.tFoot.innerHTML = data.instances.length > 1 ? liveRow(['Host total', ''], data.total, now, 'th') : '';
      live.dataset.refreshed = String(now);
    }).catch(function () { /* the next tick tries again */ });
  }

  if (instances) setInterval(refreshInstances, EVERY_MS);
  if (live) {
    refreshLive();
    setInterval(refreshLive, EVERY_MS);
  }
})();
