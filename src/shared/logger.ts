import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Paths whose values must never reach a log line. */
export const redactPaths = ['req.headers.authorization', 'headers.authorization', '*.apiKey', '*.authorization'];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: LoggerOptions = { level, base: { pid: process.pid }, redact: { paths: redactPaths, censor: '[redacted]' } };
  return destination ? pino(options, destination) : pino(options);
}

// C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
const controlCharacters = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** Client-supplied text made safe to log or record: no control characters, bounded length. */
export function sanitizeClientText(value: string, maxLength = 200): string {
  const clean = value.replace(controlCharacters, '');
  return clean.length > maxLength ? clean.slice(0, maxLength) : clean;
}
