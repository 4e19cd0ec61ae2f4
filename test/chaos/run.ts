import { FULL, missedTargets, runChaos, SHORT, table } from './scenarios.js';

// `npm run chaos` (add `-- --short` for the form npm test runs): prints a table, exits 1 on a missed target.
async function main(): Promise<void> {
  const short = process.argv.includes('--short');
  const results = await runChaos(short ? SHORT : FULL, (line) => process.stdout.write(`${line}\n`));
  process.stdout.write(`\n${table(results)}\n\n`);
  const missed = missedTargets(results);
  for (const line of missed) process.stdout.write(`MISSED ${line}\n`);
  for (const r of results) for (const note of r.notes) process.stdout.write(`note ${r.scenario}: ${note}\n`);
  process.stdout.write(missed.length === 0 ? 'all targets met\n' : '');
  process.exitCode = missed.length === 0 ? 0 : 1;
}

void main();
