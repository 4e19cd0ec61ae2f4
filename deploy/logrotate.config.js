// The logrotate app alone, for production: ecosystem.config.js declares web alone there (SPEC), and
// deploy/deploy.sh starts this from the live release once a deploy is committed. The declaration is
// the local stack's (src/ops/stack.ts); docs/log-rotation.md says what it does.
const path = require('node:path');

const root = path.resolve(__dirname, '..');
require(path.join(root, 'src/ops/build-check.cjs')).assertBuilt();
const { logrotateApp } = require(path.join(root, 'dist/ops/stack.js'));

module.exports = { apps: [logrotateApp(root)] };
