// Baseline for docs/PERFORMANCE.md: how fast graphile-worker drains no-op
// jobs on the same PostgreSQL server `station bench` uses.
//
//   node bench.mjs [--jobs 20000] [--concurrency 10] [--database-url URL] [--schema graphile_bench]
//
// It works in its own schema (dropped before and after), enqueues the jobs in
// bulk with addJobs, then starts a worker pool with a no-op task and times
// from the first job starting to the jobs table being empty. Prints one
// markdown row in the same columns as `station bench`.

import { parseArgs } from "node:util";

// graphile-worker reads this when its modules load; logging 20,000 "Completed
// task" lines would measure the console, not the queue.
process.env.NO_LOG_SUCCESS = "1";

const { values } = parseArgs({
  options: {
    jobs: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "10" },
    "database-url": {
      type: "string",
      default:
        process.env.STATION_TEST_POSTGRES_URL ||
        "postgres://postgres@127.0.0.1:5432/test",
    },
    schema: { type: "string", default: "graphile_bench" },
  },
});
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);
const connectionString = values["database-url"];
const schema = values.schema;
if (!Number.isInteger(jobs) || jobs < 1) {
  throw new Error(`--jobs must be a positive integer, got ${values.jobs}`);
}
if (!Number.isInteger(concurrency) || concurrency < 1) {
  throw new Error(`--concurrency must be a positive integer, got ${values.concurrency}`);
}
if (!/^[a-z_][a-z0-9_]*$/.test(schema)) {
  throw new Error(`--schema must be a plain lower-case identifier, got ${schema}`);
}

const { run, runMigrations, makeWorkerUtils, Logger } = await import("graphile-worker");
const { default: pg } = await import("pg");
const { version } = (await import("graphile-worker/package.json", { with: { type: "json" } })).default;

// Errors still reach stderr; routine info lines do not.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

const admin = new pg.Pool({ connectionString, max: 1 });
const dropSchema = () => admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);

async function main() {
  await dropSchema();
  await runMigrations({ connectionString, schema, logger });

  console.error(`graphile-worker ${version}: enqueueing ${jobs} jobs…`);
  const utils = await makeWorkerUtils({ connectionString, schema, logger });
  const enqueueStart = process.hrtime.bigint();
  const chunk = 1000;
  for (let i = 0; i < jobs; i += chunk) {
    const specs = [];
    for (let j = i; j < Math.min(i + chunk, jobs); j++) specs.push({ identifier: "noop", payload: { n: j } });
    await utils.addJobs(specs);
  }
  const enqueueSecs = Number(process.hrtime.bigint() - enqueueStart) / 1e9;
  await utils.release();

  console.error(`graphile-worker ${version}: draining with concurrency ${concurrency}…`);
  let started = null;
  let finishedTasks = 0;
  let allTasksRan;
  const tasksDone = new Promise((resolve) => (allTasksRan = resolve));
  const runner = await run({
    connectionString,
    schema,
    logger,
    concurrency,
    // One connection per concurrent job plus one for LISTEN, as graphile's own perf test does.
    maxPoolSize: concurrency + 1,
    noHandleSignals: true,
    pollInterval: 1000,
    taskList: {
      noop: async () => {
        started ??= process.hrtime.bigint();
        if (++finishedTasks === jobs) allTasksRan();
      },
    },
  });
  await tasksDone;
  // Completions are written after the task returns; the drain ends when the
  // last one is in the database.
  const countSql = `SELECT COUNT(*)::int AS n FROM ${schema}._private_jobs`;
  while ((await admin.query(countSql)).rows[0].n > 0) await new Promise((r) => setTimeout(r, 2));
  const drainSecs = Number(process.hrtime.bigint() - started) / 1e9;
  await runner.stop();

  const rate = (n, s) => Math.round(n / s);
  console.log(
    `| graphile-worker ${version} | PostgreSQL | ${jobs} | ${concurrency} | 1 | ` +
      `${rate(jobs, enqueueSecs)} (bulk addJobs) | ${rate(jobs, drainSecs)} | — | — |`,
  );
}

try {
  await main();
} finally {
  await dropSchema().catch((e) => console.error(`could not drop schema ${schema}: ${e.message}`));
  await admin.end();
}
