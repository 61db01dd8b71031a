/**
 * Elapsed seconds for summaries. Perf: process.hrtime instead of the global `performance`, whose
 * first use loads Node's perf_hooks internals (~0.07 s measured at start-up of a small checkout).
 */
export function stopwatch(): () => number {
  const t0 = process.hrtime.bigint();
  return () => Number(process.hrtime.bigint() - t0) / 1e9;
}
