import { generateTraffic, type TrafficSummary } from './traffic-generator.js';

// Entry of the docker-compose `traffic` service (and handy against `npm run demo`):
// TRAFFIC_TARGET, TRAFFIC_MODELS (comma separated), TRAFFIC_RPS, TRAFFIC_STREAM_SHARE,
// TRAFFIC_DURATION_S (unset: until SIGTERM), TRAFFIC_API_KEY.
const env = process.env;
const baseUrl = (env['TRAFFIC_TARGET'] ?? 'http://127.0.0.1:4000').replace(/\/+$/, '');
const models = (env['TRAFFIC_MODELS'] ?? 'auto:chat')
  .split(',')
  .map((model) => model.trim())
  .filter(Boolean);
const ratePerSecond = Number(env['TRAFFIC_RPS'] ?? '2');
const streamShare = Number(env['TRAFFIC_STREAM_SHARE'] ?? '0.5');
const durationSeconds = env['TRAFFIC_DURATION_S'] === undefined ? undefined : Number(env['TRAFFIC_DURATION_S']);
const apiKey = env['TRAFFIC_API_KEY'];

const controller = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => controller.abort());

let window: TrafficSummary = { sent: 0, skipped: 0, byStatus: {}, failovers: 0 };
const report = setInterval(() => {
  console.log(JSON.stringify({ msg: 'traffic', target: baseUrl, ...window }));
  window = { sent: 0, skipped: 0, byStatus: {}, failovers: 0 };
}, 10_000);

console.log(JSON.stringify({ msg: 'traffic generator started', target: baseUrl, models, ratePerSecond, streamShare }));
const total = await generateTraffic({
  baseUrl,
  models,
  ratePerSecond,
  streamShare,
  signal: controller.signal,
  ...(durationSeconds === undefined ? {} : { durationMs: durationSeconds * 1000 }),
  ...(apiKey ? { apiKey } : {}),
  onResult: (result) => {
    window.sent += 1;
    const key = result.status === 0 ? 'no_answer' : String(result.status);
    window.byStatus[key] = (window.byStatus[key] ?? 0) + 1;
    if (result.attempts !== null && result.attempts > 1) window.failovers += 1;
    if (result.error) console.log(JSON.stringify({ msg: 'request failed', model: result.model, error: result.error }));
  },
});
clearInterval(report);
console.log(JSON.stringify({ msg: 'traffic generator stopped', ...total }));
