/**
 * One line that says what went wrong, for logs, `/admin/candidates` and the dispatch log: the
 * error's message, prefixed with its code when it has one (`ECONNREFUSED: connect …`). Not for
 * client answers: it may name internal addresses.
 */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return typeof code === 'string' && code !== '' && !error.message.startsWith(code) ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}
