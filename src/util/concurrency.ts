/**
 * Runs `fn` on every item with at most `limit` in flight (crypto and fsyncs
 * on libuv's pool overlap the event loop's work; fetches overlap each
 * other); results in order. After a failure no new item starts, and it
 * rejects only once those in flight have settled, so a caller's cleanup never
 * races a straggler. Items start in order.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`mapLimit: limit ${limit} is not a positive integer`);
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const settled = await Promise.allSettled(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      try {
        for (let i = next++; i < items.length && !failed; i = next++) out[i] = await fn(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }),
  );
  const bad = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
  return out;
}
