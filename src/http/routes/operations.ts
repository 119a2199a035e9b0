import type { Request, Response } from 'express';
import type { Registry } from 'prom-client';
import type { Config } from '../../config/load.js';
import type { BackingServicesHealth } from '../../events/event-sink.js';
import type { FleetState } from '../../fleet/fleet-state.js';
import type { BreakerRegistry } from '../../breakers/breaker-registry.js';
import { contextOf } from '../middleware/request-context.js';
import { joinCandidateId } from '../../shared/candidate-id.js';

/** GET /healthz: the process is alive. */
export function healthzRoute() {
  return (_req: Request, res: Response): void => {
    contextOf(res).route = 'healthz';
    res.json({ status: 'ok' });
  };
}

/**
 * GET /readyz: 200 once config is loaded, reporting the backing services without failing on
 * them; 503 `draining` from the moment a shutdown began, so a load balancer stops sending here
 * while the gateway still accepts what is already on its way.
 */
export function readyzRoute(health: () => BackingServicesHealth, draining: () => boolean) {
  return (_req: Request, res: Response): void => {
    contextOf(res).route = 'readyz';
    if (draining()) res.status(503);
    res.json({ status: draining() ? 'draining' : 'ready', ...health() });
  };
}

/** GET /metrics: Prometheus text format; `refresh` updates gauges that are read, not pushed. */
export function metricsRoute(register: Registry, refresh: () => void) {
  return async (_req: Request, res: Response): Promise<void> => {
    contextOf(res).route = 'metrics';
    refresh();
    const body = await register.metrics();
    res.setHeader('content-type', register.contentType);
    res.end(body);
  };
}

/** GET /admin/candidates: every candidate with breaker, health, loaded, latency and context. */
export function adminCandidatesRoute(config: () => Config, fleet: FleetState, breakers: BreakerRegistry) {
  return (_req: Request, res: Response): void => {
    contextOf(res).route = 'admin';
    const current = config();
    const ids = new Map<string, { provider: string; model: string; virtualModels: string[] }>();
    for (const virtualModel of Object.values(current.virtualModels)) {
      for (const candidate of virtualModel.candidates) {
        const entry = ids.get(candidate.id) ?? { provider: candidate.provider, model: candidate.model, virtualModels: [] };
        entry.virtualModels.push(virtualModel.name);
        ids.set(candidate.id, entry);
      }
    }
    for (const provider of Object.values(current.providers)) {
      for (const model of fleet.provider(provider.name).models) {
        const id = joinCandidateId(provider.name, model);
        if (!ids.has(id)) ids.set(id, { provider: provider.name, model, virtualModels: [] });
      }
    }
    const now = Date.now();
    const candidates = [...ids].map(([id, entry]) => {
      const provider = fleet.provider(entry.provider);
      const status = fleet.candidate(id);
      return {
        id,
        provider: entry.provider,
        model: entry.model,
        virtualModels: entry.virtualModels,
        breaker: breakers.position(id),
        breakerOrigin: breakers.origin(id) ?? null,
        healthy: provider.healthy ?? null,
        loaded: fleet.isLoaded(entry.provider, entry.model) ?? null,
        latencyEwmaMs: status.latencyEwmaMs === undefined ? null : Math.round(status.latencyEwmaMs),
        contextSize: status.contextSize ?? null,
        coolingDownForMs: Math.max(0, status.coolingDownUntil - now),
        lastError: status.lastError ?? provider.lastError ?? null,
        lastHealthCheckAt: provider.lastCheckAt === undefined ? null : new Date(provider.lastCheckAt).toISOString(),
      };
    });
    res.json({ object: 'list', data: candidates });
  };
}
