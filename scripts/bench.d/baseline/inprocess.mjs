// The baseline's in-process limit: the same sharp pipelines as server.mjs on
// inputs already in memory, CONCURRENCY at once, for DURATION seconds each.
// It tells whether a gap between the servers is in the image pipeline or
// around it.
//
//   node inprocess.mjs DIR [DURATION_S] [CONCURRENCY]
//
// DIR holds the inputs (origin -dump DIR -serve=false). CASES=a,b limits the
// cases. Prints one JSON line per case, with the CPU time per transform.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { resizeToHeight } from './pipeline.mjs';


const [dir, durationS = '5', concurrency = '2'] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node inprocess.mjs DIR [DURATION_S] [CONCURRENCY]');
  process.exit(2);
}

const cases = [
  { name: 'a-emoji-png512', file: 'emoji.png', height: 128 },
  { name: 'b-avatar-jpeg4000x3000', file: 'avatar.jpg', height: 320 },
  { name: 'c-emoji-gif256x60', file: 'anim.gif', height: 128 },
];
const only = process.env.CASES ? process.env.CASES.split(',') : null;

// FAST_SHRINK_ON_LOAD=0 makes sharp leave a factor of two for the resize
// after a JPEG's shrink-on-load, as libvips' thumbnail does.
const fastShrinkOnLoad = process.env.FAST_SHRINK_ON_LOAD !== '0';
const transform = (buf, height) => resizeToHeight(buf, height, fastShrinkOnLoad);

for (const c of cases) {
  if (only && !only.some((p) => c.name.startsWith(p))) continue;
  const buf = readFileSync(join(dir, c.file));
  await transform(buf, c.height); // warm-up
  const end = Date.now() + Number(durationS) * 1000;
  const start = process.hrtime.bigint();
  const cpu0 = process.cpuUsage(); // every thread of the process
  let n = 0;
  await Promise.all(
    Array.from({ length: Number(concurrency) }, async () => {
      while (Date.now() < end) {
        await transform(buf, c.height);
        n++;
      }
    }),
  );
  const s = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({ name: c.name, requests: n, elapsed_s: s, rps: n / s, cpu_ms_per_op: (cpu.user + cpu.system) / 1000 / n }));
}
