// Whether dist/ is a build of the sources as they are now. `npm run build` ends by writing dist/BUILD,
// a hash of src/ and tsconfig.json; ecosystem.config.js and the npm scripts that run dist/ check it
// first. A missing or stale build is then one line naming the command, not a stack trace from PM2.
// Plain CommonJS outside the build, because it must run when there is no build.
//   node src/ops/build-check.cjs stamp   (the end of npm run build)
//   node src/ops/build-check.cjs check   (exit 1 with one line when dist/ is missing or stale)
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const STAMP = path.join(ROOT, 'dist', 'BUILD');

function sourceHash() {
  const hash = crypto.createHash('sha256');
  const add = (file) => hash.update(path.relative(ROOT, file)).update('\0').update(fs.readFileSync(file)).update('\0');
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) add(full);
    }
  };
  walk(path.join(ROOT, 'src'));
  add(path.join(ROOT, 'tsconfig.json'));
  return hash.digest('hex');
}

/** What is wrong with dist/, or undefined when it is a build of the sources as they are. */
function buildProblem() {
  if (!fs.existsSync(STAMP)) return 'there is no build in dist/';
  if (fs.readFileSync(STAMP, 'utf8').trim() !== sourceHash()) return 'the build in dist/ is older than src/';
  return undefined;
}

function assertBuilt() {
  const problem = buildProblem();
  if (!problem) return;
  process.stderr.write(`sitelog: ${problem}; run: npm run build\n`);
  process.exit(1);
}

if (require.main === module) {
  const command = process.argv[2];
  if (command === 'stamp') fs.writeFileSync(STAMP, `${sourceHash()}\n`);
  else if (command === 'check') assertBuilt();
  else {
    process.stderr.write('usage: node src/ops/build-check.cjs stamp|check\n');
    process.exit(2);
  }
}

module.exports = { assertBuilt, buildProblem };
