import { describe, expect, it } from 'vitest';
import { booMetricNames, substituteDashboardVariables, withBoolComparisons } from './promql-expressions.js';

describe('withBoolComparisons', () => {
  it('adds bool to comparisons but not to label matchers or strings', () => {
    expect(withBoolComparisons('up{job!="a",code=~"5.."} == 0')).toBe('up{job!="a",code=~"5.."} == bool 0');
    expect(withBoolComparisons('a > 0.2 and b >= 1 or c != 2')).toBe('a > bool 0.2 and b >= bool 1 or c != bool 2');
    expect(withBoolComparisons('x{l="a>b"} < bool 3')).toBe('x{l="a>b"} < bool 3');
  });
});

describe('substituteDashboardVariables', () => {
  it('replaces intervals and template variables in every syntax', () => {
    const intervals = { rate: '1m', interval: '15s', range: '5m' };
    expect(substituteDashboardVariables('rate(m{a=~"$vm",b=~"${c}",d=~"${e:regex}"}[$__rate_interval])', intervals, { c: 'x' })).toBe(
      'rate(m{a=~".*",b=~"x",d=~".*"}[1m])',
    );
  });
});

describe('booMetricNames', () => {
  it('finds metric names, not label values', () => {
    expect(booMetricNames('sum(rate(boo_a_total{l="boo_not_metric"}[1m])) / boo_b')).toEqual(['boo_a_total', 'boo_b']);
  });
});
