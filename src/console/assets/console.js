// Keeps the instances table fresh: the JSON API accepts the console's session cookie.
(function () {
  var table = document.getElementById('instances');
  if (!table) return;
  var esc = function (s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  };
  var time = function (iso) { return esc(iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')); };
  function refresh() {
    fetch('/api/instances', { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        var rows = data.items.map(function (r) {
          return '<tr><td>' + esc(r.host) + '</td><td>' + r.instance + '</td><td>' + r.pid + '</td><td><time>' + time(r.started_at) +
            '</time></td><td><time>' + time(r.last_seen) + '</time></td><td>' + r.restarts + '</td><td>' + (r.rss / 1048576).toFixed(1) + ' MB</td></tr>';
        });
        table.tBodies[0].innerHTML = rows.join('') || '<tr><td colspan="7">No instance is alive.</td></tr>';
        table.dataset.refreshed = String(Date.now());
      })
      .catch(function () { /* the next tick tries again */ });
  }
  setInterval(refresh, 2000);
})();
