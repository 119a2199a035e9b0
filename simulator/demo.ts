/**
 * `npm run demo`: a simulated fleet (two llama-swap hosts, one OpenAI-compatible server, one of
 * them flaky) behind a real gateway process, plus the worker when REDIS_URL is set. Prints
 * commands to try; Ctrl-C stops everything.
 *
 * Environment: PORT (gateway, default 4000), REDIS_URL / DATABASE_URL / BOO_DATA_DIR / LOG_LEVEL
 * are passed through to the gateway and worker (BOO_DATA_DIR defaults to a temporary directory).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { startDemoFleet } from './demo-fleet.js';
import type { FakeProvider } from './fake-provider.js';
import { errorMessage } from '../src/shared/error-message.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Repository root, whether this runs compiled (dist/simulator) or through tsx (simulator). */
const oneUp = resolve(here, '..');
const root = basename(oneUp) === 'dist' ? dirname(oneUp) : oneUp;

const out = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

/** Runs `node <script>` with its output prefixed, one line at a time. */
function startChild(label: string, script: string, env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => out(`[${label}] ${line}`));
  }
  return child;
}

async function waitForReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastProblem = 'no answer yet';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the gateway exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    }
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) return;
      lastProblem = `/readyz answered ${res.status}`;
    } catch (err: unknown) {
      lastProblem = errorMessage(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`the gateway was not ready within ${timeoutMs} ms (${lastProblem})`);
}

async function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

function printTryLines(gateway: string, fleet: Record<string, FakeProvider>, configPath: string, dataDir: string): void {
  const json = "-H 'content-type: application/json'";
  const ask = (extra: string): string => `'{"model":"auto:chat","messages":[{"role":"user","content":"Say hello"}]${extra}}'`;
  out();
  out('boo-gateway demo is up.');
  for (const [name, provider] of Object.entries(fleet)) out(`  upstream ${name.padEnd(6)} ${provider.url}`);
  out(`  gateway         ${gateway}`);
  out(`  config          ${configPath}`);
  out(`  data            ${dataDir}`);
  out();
  out('Try (gpu-b fails ~30% of the time: watch x-boo-attempts and x-boo-candidate;');
  out(' a fifth of its streams die mid-answer and go on from gpu-a: the answer reads whole):');
  out(`  curl -si ${gateway}/v1/chat/completions ${json} -d ${ask('')}`);
  out(`  curl -sN ${gateway}/v1/chat/completions ${json} -d ${ask(',"stream":true')}`);
  out(`  curl -sN ${gateway}/v1/responses ${json} -d '{"model":"auto:chat","input":"Say hello","stream":true}'`);
  out(
    `  curl -sN ${gateway}/v1/messages ${json} -H 'x-api-key: unused' -d '{"model":"auto:chat","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}'`,
  );
  out(`  curl -s ${gateway}/completion ${json} -d '{"model":"auto:chat","prompt":"int main(","n_predict":16}'`);
  out(`  curl -s ${gateway}/v1/models`);
  out(`  curl -s ${gateway}/upstream/auto:chat/props`);
  out(`  curl -s ${gateway}/admin/candidates`);
  out(`  curl -s ${gateway}/metrics | grep ^boo_`);
  out(`  for i in $(seq 20); do curl -s -o /dev/null -D - ${gateway}/v1/chat/completions ${json} -d ${ask('')} | grep -i x-boo-; done`);
  out();
  out('Or with the OpenAI SDK (npm i openai), in an .mjs file:');
  out(`  import OpenAI from 'openai';`);
  out(`  const client = new OpenAI({ baseURL: '${gateway}/v1', apiKey: 'unused' });`);
  out(`  const stream = await client.chat.completions.create({ model: 'auto:chat', stream: true,`);
  out(`    messages: [{ role: 'user', content: 'Say hello' }] });`);
  out(`  for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? '');`);
  out();
  out('Ctrl-C stops the gateway, the worker and the fleet.');
  out();
}

async function main(): Promise<void> {
  const gatewayScript = join(root, 'dist/src/main.js');
  const workerScript = join(root, 'dist/workers/main.js');
  if (!existsSync(gatewayScript)) throw new Error(`${gatewayScript} is missing: run \`npm run build\` first`);

  const tempDir = await mkdtemp(join(tmpdir(), 'boo-demo-'));
  let fleet: Record<string, FakeProvider> = {};
  const children: ChildProcess[] = [];
  let stopping = false;

  const shutdown = async (code: number): Promise<never> => {
    if (!stopping) {
      stopping = true;
      out('[demo] stopping...');
      await Promise.all(children.map((child) => stopChild(child, 10_000)));
      await Promise.all(Object.values(fleet).map((provider) => provider.close()));
      await rm(tempDir, { recursive: true, force: true });
    }
    process.exit(code);
  };
  // Ctrl-C also reaches the children (same process group); they shut down on their own and we wait for them.
  process.once('SIGINT', () => void shutdown(0));
  process.once('SIGTERM', () => void shutdown(0));
  // `npm run demo | head`: when the reader goes away, stop the gateway and worker too instead of
  // dying on EPIPE and leaving them running.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    void shutdown(0);
  });

  try {
    fleet = await startDemoFleet();

    const document = parseYaml(await readFile(join(root, 'config/demo.yaml'), 'utf8')) as {
      providers: Record<string, { baseUrl: string }>;
    };
    for (const [name, provider] of Object.entries(document.providers)) {
      const fake = fleet[name];
      if (!fake) throw new Error(`config/demo.yaml names a provider "${name}" the demo does not simulate`);
      provider.baseUrl = fake.url;
    }
    const configPath = join(tempDir, 'gateway.yaml');
    await writeFile(configPath, stringifyYaml(document));

    const port = process.env['PORT'] ?? '4000';
    const dataDir = process.env['BOO_DATA_DIR'] ?? join(tempDir, 'data');
    const env: NodeJS.ProcessEnv = { ...process.env, BOO_CONFIG: configPath, PORT: port, BOO_DATA_DIR: dataDir };
    const gateway = startChild('gateway', gatewayScript, env);
    children.push(gateway);
    if (process.env['REDIS_URL']) {
      if (!existsSync(workerScript)) throw new Error(`${workerScript} is missing: run \`npm run build\` first`);
      children.push(startChild('worker', workerScript, env));
    }
    for (const child of children) {
      child.once('exit', (code, signal) => {
        if (stopping) return;
        out(`[demo] a child process exited (${code ?? signal}); stopping the demo`);
        void shutdown(1);
      });
    }

    const gatewayUrl = `http://127.0.0.1:${port}`;
    await waitForReady(gatewayUrl, gateway, 30_000);
    printTryLines(gatewayUrl, fleet, configPath, dataDir);
  } catch (err: unknown) {
    out(`[demo] ${errorMessage(err)}`);
    await shutdown(1);
  }
}

await main();
