/**
 * Splits a candidate id `provider/model` at the first `/`: model names may themselves hold
 * `/` and `:` (`gpu-a/org/model:q4`). Returns undefined when either half is empty.
 */
export function splitCandidateId(id: string): { provider: string; model: string } | undefined {
  const slash = id.indexOf('/');
  if (slash <= 0 || slash === id.length - 1) return undefined;
  return { provider: id.slice(0, slash), model: id.slice(slash + 1) };
}

/** The candidate id of `model` on `provider`: the inverse of {@link splitCandidateId}. */
export function joinCandidateId(provider: string, model: string): string {
  return `${provider}/${model}`;
}
