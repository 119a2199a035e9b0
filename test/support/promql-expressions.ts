/** A PromQL expression and where it was found, for error messages. */
export interface SourcedExpression {
  readonly source: string;
  readonly expr: string;
}

interface Panel {
  title?: string;
  type?: string;
  panels?: Panel[];
  targets?: { refId?: string; expr?: string }[];
}

interface Dashboard {
  panels?: Panel[];
  templating?: { list?: { name?: string; query?: string | { query?: string } }[] };
}

function walkPanels(panels: readonly Panel[], visit: (panel: Panel) => void): void {
  for (const panel of panels) {
    visit(panel);
    if (panel.panels) walkPanels(panel.panels, visit);
  }
}

/** The panels of a Grafana dashboard that show data (rows excluded), nested rows included. */
export function dashboardPanels(dashboard: unknown): Panel[] {
  const out: Panel[] = [];
  walkPanels((dashboard as Dashboard).panels ?? [], (panel) => {
    if (panel.type !== 'row') out.push(panel);
  });
  return out;
}

/** Every `expr` of every panel target, as written in the dashboard (variables not substituted). */
export function dashboardExpressions(dashboard: unknown): SourcedExpression[] {
  return dashboardPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ source: `panel "${panel.title ?? '?'}" ${target.refId ?? '?'}`, expr: target.expr ?? '' })),
  );
}

/**
 * Template variable queries `label_values(metric, label)` turned into the PromQL that yields
 * the same values, so a variable whose metric does not exist is caught like a panel.
 */
export function dashboardVariableExpressions(dashboard: unknown): SourcedExpression[] {
  const out: SourcedExpression[] = [];
  for (const variable of (dashboard as Dashboard).templating?.list ?? []) {
    const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
    const match = query ? /^label_values\((.+),\s*(\w+)\)$/.exec(query.trim()) : null;
    if (match) out.push({ source: `variable $${variable.name ?? '?'}`, expr: `count by (${match[2]}) (${match[1]})` });
  }
  return out;
}

/**
 * Replaces Grafana variables: built-in intervals by fixed durations, template variables
 * (`$name`, `${name}`, `${name:format}`) by `values[name]`, else `.*` (the "All" value).
 */
export function substituteDashboardVariables(
  expr: string,
  intervals: { rate: string; interval: string; range: string },
  values: Record<string, string> = {},
): string {
  return expr
    .replaceAll('$__rate_interval', intervals.rate)
    .replaceAll('$__interval', intervals.interval)
    .replaceAll('$__range', intervals.range)
    .replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, (_whole, braced: string | undefined, bare: string | undefined) => values[(braced ?? bare)!] ?? '.*');
}

interface RuleFile {
  groups?: { name?: string; rules?: { alert?: string; record?: string; expr?: string }[] }[];
}

/** Every rule expression of a Prometheus rule file (parsed YAML). */
export function ruleExpressions(rules: unknown): SourcedExpression[] {
  return ((rules as RuleFile).groups ?? []).flatMap((group) =>
    (group.rules ?? []).map((rule) => ({ source: `rule ${rule.alert ?? rule.record ?? '?'} (group ${group.name ?? '?'})`, expr: rule.expr ?? '' })),
  );
}

/**
 * Adds the `bool` modifier to every comparison outside label matchers and strings. A threshold
 * alert returns nothing while it does not fire; its `bool` form returns 0/1 for every series
 * the expression reads, so "no data" then means a missing series, not a quiet alert.
 */
export function withBoolComparisons(expr: string): string {
  let out = '';
  let braces = 0;
  let quote: string | null = null;
  for (let i = 0; i < expr.length; i += 1) {
    const char = expr[i]!;
    if (quote) {
      out += char;
      if (char === '\\') {
        out += expr[i + 1] ?? '';
        i += 1;
      } else if (char === quote) quote = null;
      continue;
    }
    if (char === '"' || char === "'" || char === '`') quote = char;
    else if (char === '{') braces += 1;
    else if (char === '}') braces -= 1;
    const two = expr.slice(i, i + 2);
    const operator = braces > 0 || quote ? null : ['==', '!=', '>=', '<='].includes(two) ? two : char === '>' || char === '<' ? char : null;
    if (!operator) {
      out += char;
      continue;
    }
    out += operator;
    i += operator.length - 1;
    if (!/^\s*bool\b/.test(expr.slice(i + 1))) out += ' bool';
  }
  return out;
}

/** The `boo_*` metric names an expression reads (label values and strings excluded). */
export function booMetricNames(expr: string): string[] {
  const withoutStrings = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
  return [...new Set(withoutStrings.match(/\bboo_[a-z0-9_]+/g) ?? [])];
}
