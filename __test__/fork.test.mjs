// fork(), for real: each scenario runs in its own Node.js process (fixtures/fork.cjs, and
// fixtures/fork-isolation.cjs for what must not be shared), which forks and waits for its children
// with deadlines.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { fixture, runNode } from './helpers/run.mjs';

const forkable = process.platform === 'linux';
const run = (name, options = {}, runOptions = {}) =>
  runNode([fixture('fork.cjs'), name, JSON.stringify(options)], { timeoutMs: 60_000, ...runOptions });
const isolation = (name, options = {}, runOptions = {}, nodeArgs = []) =>
  runNode([...nodeArgs, fixture('fork-isolation.cjs'), name, JSON.stringify(options)], {
    timeoutMs: 60_000,
    ...runOptions,
  });
const childLines = (stdout) =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('CHILD '))
    .map((l) => JSON.parse(l.slice(6)));

// Serial: forked children allocate hundreds of MB and spin; in parallel they would load the machine
// enough to disturb the timing-sensitive tests of other files.
const linux = forkable ? test.serial : test.skip;

linux(
  'a child whose parent used the threadpool and allocated allocates hundreds of MB and collects garbage',
  async (t) => {
    const r = await run('gc', { parentMb: 150, childMb: 400 });
    t.is(r.code, 0, r.stderr);
    t.deepEqual(r.result.status, { code: 42, signal: null });
    const [c] = childLines(r.stdout);
    t.true(c.gcDone);
    t.true(c.kept > 0);
  },
);

linux('a child uses fs, crypto, dns and zlib, then exits with a code the parent reads back', async (t) => {
  const r = await run('work', { code: 17 });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 17, signal: null });
  const [c] = childLines(r.stdout);
  t.is(c.pid, r.result.pid, 'process.pid is the child pid');
  t.is(c.ppid, r.result.parentPid, 'process.ppid is the parent');
  t.true(c.fsOk);
  t.is(c.key.length, 32);
  t.regex(c.addr, /^(127\.0\.0\.1|::1)$/);
  t.true(c.zipped > 0);
});

linux('code that gets hot only in the child is optimized, as in the parent (V8 worker tasks run)', async (t) => {
  const r = await runNode(['--allow-natives-syntax', fixture('fork-hot.cjs')], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 0, signal: null });
  const [c] = childLines(r.stdout);
  t.true(r.result.parent.optimized, `parent status ${r.result.parent.status}`);
  t.true(c.optimized, `child status ${c.status}`);
});

linux('a child forks a grandchild, which allocates, uses the threadpool and exits', async (t) => {
  const r = await run('grandchild');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 6, signal: null });
  const lines = childLines(r.stdout);
  const g = lines.find((l) => l.grandchild);
  const c = lines.find((l) => l.child);
  t.is(c.child, r.result.pid);
  t.is(g.ppid, c.child);
  t.deepEqual(c.grandchildStatus, { code: 5, signal: null });
});

linux('a grandchild whose loop runs dry ends (beforeExit, then its exit code), and so does its parent', async (t) => {
  const r = await run('grandchildEnds');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 9, signal: null });
  t.deepEqual(childLines(r.stdout), [{ grandchildBeforeExit: 8 }, { grandchildStatus: { code: 8, signal: null } }]);
});

linux(
  'the child does not repeat the parent: randomInt, randomUUID, randomBytes, getRandomValues, Math.random differ',
  async (t) => {
    const r = await run('random');
    t.is(r.code, 0, r.stderr);
    const [c] = childLines(r.stdout);
    const p = r.result.parent;
    // Served from caches in Node's JavaScript filled in the parent: randomInt's 6 KiB, randomUUID's
    // batch of 128 (shared with randomUUIDv7, Node 24+).
    for (const v of c.int) t.false(p.int.includes(v), `randomInt repeats the parent: ${c.int} / ${p.int}`);
    t.not(c.smallInt, p.smallInt);
    t.not(c.uuid, p.uuid);
    if (p.uuidv7 !== null) t.not(c.uuidv7, p.uuidv7);
    // Straight from OpenSSL, which reseeds in the child.
    t.not(c.bytes, p.bytes);
    t.not(c.fill, p.fill);
    t.not(c.values, p.values);
    t.not(c.webcrypto, p.webcrypto);
    for (const v of c.math) {
      t.true(v >= 0 && v < 1);
      t.false(p.math.includes(v));
    }
  },
);

linux('a child whose setup fails ends with status 70 and says why; fork() never returns there', async (t) => {
  const r = await run('setupFails');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 70, signal: null });
  t.regex(r.stderr, /loop-helpers: fork\(\) child setup failed, the child ends \(status 70\): TypeError/);
  t.deepEqual(childLines(r.stdout), []);
});

linux('with a frozen Math, the child warns that Math.random repeats the parent and works on', async (t) => {
  const r = await run('frozenMath');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 3, signal: null });
  t.deepEqual(childLines(r.stdout), [{ works: true }]);
  t.regex(r.stderr, /ForkWarning: Math\.random could not be replaced in the forked child/);
});

const exitCases = [
  ['exit', 3, null],
  ['natural', 4, { timerRan: true }],
  ['throw', 1, null],
  ['reject', 1, null],
  ['beforeExit', 5, { beforeExit: 2, code: 5 }],
  ['exitInExit', 6, null],
];
for (const [mode, code, expectChild] of exitCases) {
  linux(`child exit path "${mode}": status ${code}, 'exit' listeners ran, all 256 KiB of output arrived`, async (t) => {
    const r = await run('exits', { mode });
    t.is(r.code, 0, r.stderr);
    t.deepEqual(r.result.status, { code, signal: null });
    t.is(r.stdout.split('\n').filter((l) => l.startsWith('D')).length, 256);
    t.regex(r.stdout, /CHILD_EXIT_LISTENER \d+/);
    if (mode === 'throw') t.regex(r.stderr, /Error: thrown in the forked child/);
    if (mode === 'reject') t.regex(r.stderr, /Error: rejected in the forked child/);
    if (expectChild) t.like(childLines(r.stdout).pop(), expectChild);
    if (mode === 'beforeExit') t.true(childLines(r.stdout).some((c) => c.rearmed));
  });
}

linux('a BlockingDetector started in the parent still fires in the child, naming the child pid', async (t) => {
  const r = await run('detector');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 0, signal: null });
  const [c] = childLines(r.stdout);
  // The 350 ms spin, by its frames: a loaded machine may add a block of the child's own start-up
  // (one that began before fork() returned, with frames and no CPU time of the child's thread).
  const spin = c.events.find((e) => e.spun);
  t.truthy(spin, JSON.stringify(c.events));
  // The child's own thread is the one measured and looked at (they were the parent's thread,
  // idle in waitpid, before the fix): the spin used CPU, and the warning of the execSync block
  // says where the thread was.
  t.true(spin.cpuMs > spin.duration * 0.05, JSON.stringify(spin));
  const sync = c.events.slice(c.events.indexOf(spin) + 1).find((e) => e.duration >= 250);
  t.truthy(sync, JSON.stringify(c.events));
  // Inside execSync, on the child's own thread (the parent's is in waitpid): waiting in the nested
  // loop of spawnSync, or, while the shell is still being started (a loaded machine can take over
  // a timeout to fork and exec it), reading the pipe on which libuv's spawn waits for the exec.
  t.regex(sync.threadState ?? '', /nested event loop|system call read \(kernel: \w*pipe_read\)/, JSON.stringify(sync));
  t.regex(r.stderr, new RegExp(`\\(node:${r.result.pid}\\) BlockingWarning: blocking detected after timeout=0\\.1`));
  t.is(r.result.parentEvents, 0);
});

const refusals = [
  ['worker', 'ERR_FORK_WORKERS_ALIVE', /Worker thread\(s\) alive/],
  ['inWorker', 'ERR_FORK_WORKER_THREAD', /from a Worker thread/],
  ['fsInFlight', 'ERR_FORK_REQUESTS_IN_FLIGHT', /1 libuv request\(s\) in flight/],
  ['cryptoInFlight', 'ERR_FORK_REQUESTS_IN_FLIGHT', /in flight \(threadpool work/],
  ['childProcess', 'ERR_FORK_CHILD_PROCESS_ALIVE', /child process\(es\)/],
  ['childProcessUnref', 'ERR_FORK_CHILD_PROCESS_ALIVE', /1 child process\(es\) .* \(unref'd ones count too\)/],
  ['inspector', 'ERR_FORK_INSPECTOR_ACTIVE', /inspector is active/],
];
for (const [rule, code, message] of refusals) {
  linux(`fork() refuses: ${rule} (${code})`, async (t) => {
    const r = await run('refuse', { rule });
    t.is(r.code, 0, r.stderr);
    t.is(r.result.code, code);
    t.regex(r.result.message, message);
    if (rule !== 'inWorker') t.true(r.result.isForkError);
    if (rule === 'worker') t.true(r.result.afterTerminate.forked > 0, 'allowed once the Worker exited');
    if (rule === 'childProcessUnref') t.true(r.result.afterExit.forked > 0, 'allowed once the child exited');
  });
}

test.serial('fork() refuses on Windows and on other non-Linux platforms', async (t) => {
  const r = await run('refuse', { rule: 'platform' });
  t.is(r.code, 0, r.stderr);
  t.is(r.result.win32.code, 'ERR_FORK_UNSUPPORTED_PLATFORM');
  t.regex(r.result.win32.message, /POSIX/);
  t.is(r.result.darwin.code, 'ERR_FORK_UNSUPPORTED_PLATFORM');
  t.regex(r.result.darwin.message, /Linux only \(this is darwin\)/);
});

linux('waitpid and tryWaitpid: running, exited, reaped, not a child, bad pids, killed by a signal', async (t) => {
  const r = await run('wait');
  t.is(r.code, 0, r.stderr);
  const o = r.result;
  t.is(o.whileRunning, null);
  t.deepEqual(o.done, { code: 9, signal: null });
  t.deepEqual(o.again, { name: 'ForkError', code: 'ERR_FORK_NO_SUCH_CHILD' }, 'reaped: no zombie left');
  t.deepEqual(o.stranger, { code: 'ERR_FORK_NO_SUCH_CHILD' });
  t.is(o['bad 12'].code, 'ERR_INVALID_ARG_TYPE');
  for (const bad of ['-1', '1.5', '0']) t.is(o[`bad ${bad}`].code, 'ERR_OUT_OF_RANGE');
  t.regex(o['bad 12'].message, /pid must be a number, received type string \('12'\)/);
  t.deepEqual(o.killed, { code: null, signal: 'SIGTERM' });
});

linux('prefork: children serve the listening socket the parent created', async (t) => {
  const r = await run('prefork', { children: 3 });
  t.is(r.code, 0, r.stderr);
  const { pids, served, statuses, parent } = r.result;
  t.is(served.length, 6);
  for (const pid of served) t.true(pids.includes(pid), `served by ${pid}, not a child`);
  t.false(served.includes(parent));
  t.true(new Set(served).size >= 2, `served by ${new Set(served).size} children`);
  for (const s of statuses) t.deepEqual(s, { code: null, signal: 'SIGTERM' });
});

linux('stress: 40 fork/work/exit/wait cycles from a parent using the threadpool and allocating', async (t) => {
  const r = await run('stress', { cycles: 40 }, { timeoutMs: 120_000 });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.bad, []);
  t.is(r.result.ok, 40);
});

// ---- What the child must not share with the parent (fixtures/fork-isolation.cjs).

linux("open TLS connections: the child's copies are cut before it runs, the parent's go on", async (t) => {
  const r = await isolation('tls');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 0, signal: null });
  const [c] = childLines(r.stdout);
  for (const label of ['direct', 'upgraded', 'unrefd']) {
    t.true(c.events[label].includes('close'), `${label}: ${c.events[label]}`);
    t.true(r.result.after[label], `the parent's ${label} connection works after the child wrote on its copy`);
  }
  t.deepEqual(c.closed, [true, true, true]);
  const received = r.result.received.join('|');
  t.false(received.includes('child-'), `the server received what the child wrote: ${received}`);
  for (const label of ['direct', 'upgraded', 'unrefd']) t.true(received.includes(`parent-${label}`), received);
});

linux('a DNS query in flight refuses (ERR_FORK_DNS_IN_FLIGHT); settled or cancelled, fork() works', async (t) => {
  const r = await isolation('dns');
  t.is(r.code, 0, r.stderr);
  const o = r.result;
  for (const refused of [o.inFlight, o.defaultInFlight]) {
    t.is(refused.code, 'ERR_FORK_DNS_IN_FLIGHT');
    t.true(refused.isForkError);
    t.regex(refused.message, /^fork\(\) refused: 1 DNS socket\(s\) of dns\.resolve\*\(\) \/ dns\.Resolver are open/);
  }
  t.is(o.cancelled, 'ECANCELLED');
  t.deepEqual(o.afterCancel.status, { code: 99, signal: null });
  t.deepEqual(o.answer, ['127.0.0.7']);
  t.deepEqual(o.afterAnswer.status, { code: 7, signal: null }, 'the child resolves on its own');
});

linux(
  'an inspector session works in the child; a CPU profile being recorded refuses (ERR_FORK_PROFILER_ACTIVE)',
  async (t) => {
    const r = await isolation('profiler');
    t.is(r.code, 0, r.stderr);
    const o = r.result;
    t.deepEqual(o.session.status, { code: 42, signal: null }, 'Runtime.evaluate in the child');
    t.is(o.recording.code, 'ERR_FORK_PROFILER_ACTIVE');
    t.regex(o.recording.message, /^fork\(\) refused: a CPU profile is being recorded \(thread v8:ProfEvntProc/);
    t.deepEqual(o.stopped.status, { code: 99, signal: null }, 'allowed once the profile stopped');
  },
);

for (const flag of ['--cpu-prof', '--prof']) {
  linux(`under ${flag}, fork() refuses (ERR_FORK_PROFILER_ACTIVE)`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'loop-helpers-prof-'));
    try {
      const args = flag === '--cpu-prof' ? [flag, `--cpu-prof-dir=${dir}`] : [flag];
      const r = await isolation('cpuProf', {}, { cwd: dir }, args);
      t.is(r.code, 0, r.stderr);
      t.is(r.result.recording.code, 'ERR_FORK_PROFILER_ACTIVE');
      t.regex(r.result.recording.message, new RegExp(`started by .*${flag}`));
      t.true(readdirSync(dir).length > 0, 'the profile was written at exit');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

linux("right after require('tls'), fork() waits for Node's root-certificate loader thread", async (t) => {
  const r = await isolation('afterTls');
  t.is(r.code, 0, r.stderr);
  t.true(r.result.forked > 0, JSON.stringify(r.result));
  t.deepEqual(r.result.status, { code: 0, signal: null });
  t.true(childLines(r.stdout)[0].certificates > 0);
});

linux("a Worker created in the child (and in a grandchild) starts and ends: 'exit' within 5 s", async (t) => {
  const r = await isolation('worker', {}, { timeoutMs: 90_000 });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.result.status, { code: 0, signal: null });
  const lines = childLines(r.stdout);
  const c = lines.find((l) => l.child);
  const g = lines.find((l) => l.grandchild);
  t.deepEqual(c.grandchildStatus, { code: 0, signal: null });
  for (const [who, runs] of [
    ['parent', r.result.parent],
    ['child', c.child],
    ['grandchild', g.grandchild],
  ]) {
    t.like(runs.natural, { message: 'started', code: 0 }, who);
    t.like(runs.terminated, { message: 'started', code: 1 }, who);
  }
});

/** A C compiler for the foreign-thread addon (fixtures/fork-foreign-thread.c), or undefined. */
const compiler = forkable
  ? ['cc', 'gcc', 'clang'].find((cc) => spawnSync(cc, ['--version'], { stdio: 'ignore' }).status === 0)
  : undefined;
const withCompiler = compiler ? test.serial : test.skip;
const noCompiler = compiler ? '' : ' [skipped: no C compiler (cc, gcc, clang) to build the test addon]';

withCompiler(`a native addon's own threads refuse (ERR_FORK_UNKNOWN_THREADS), named or not${noCompiler}`, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'loop-helpers-foreign-'));
  try {
    const addon = join(dir, 'foreign-thread.node');
    const cc = spawnSync(
      compiler,
      ['-shared', '-fPIC', '-O1', '-o', addon, fixture('fork-foreign-thread.c'), '-lpthread'],
      { encoding: 'utf8', timeout: 60_000 },
    );
    t.is(cc.status, 0, cc.stderr);
    const cases = [
      [{ named: true, count: 2 }, /^fork\(\) refused: 2 thread\(s\) .* \(named rdk:broker0, rdk:broker1\)/],
      // Unnamed: it carries the process's name, like Node's unnamed threads on Node 20 and 22.
      [{ named: false, count: 1 }, /^fork\(\) refused: 1 thread\(s\) .* \(1 without a name of its own/],
      [{ named: false, count: 1, threadpool: true }, /^fork\(\) refused: 1 thread\(s\) /],
    ];
    for (const [options, message] of cases) {
      const r = await isolation('threads', { ...options, addon });
      t.is(r.code, 0, r.stderr);
      const o = r.result;
      t.deepEqual(o.before.status, { code: 99, signal: null }, `${JSON.stringify(options)}: before`);
      t.is(o.during.code, 'ERR_FORK_UNKNOWN_THREADS', JSON.stringify(o.during));
      t.regex(o.during.message, message);
      t.deepEqual(o.after.status, { code: 99, signal: null }, `${JSON.stringify(options)}: once stopped`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
