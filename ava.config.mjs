// ava's configuration (a file rather than package.json's "ava" field, for `sortTestFiles`).
import { basename } from 'node:path';

// The files that take longest, started first: ava runs two files at a time (one per CPU here) in
// the order given, and these four are long chains of child processes (terminations' randomised
// races run one at a time; churn's hundreds of Workers; unguarded's 69 contexts; fork's cycles).
// Started last, as in alphabetical order, terminations alone held the end of a Node 24 run for a
// minute and more after the rest had finished. The others follow alphabetically.
const longestFirst = ['terminations', 'churn', 'unguarded', 'fork'];
const rank = (file) => {
  const i = longestFirst.indexOf(basename(file, '.test.mjs'));
  return i === -1 ? longestFirst.length : i;
};

export default {
  files: ['__test__/**/*.test.mjs'],
  timeout: '60s',
  // Each test file in a child process: the addon's per-process state (signals, the monitor
  // thread, fork()) is the thing under test.
  workerThreads: false,
  sortTestFiles: (a, b) => rank(a) - rank(b) || a.localeCompare(b),
};
