import type { Request, Response } from 'express';
import type { Config } from '../../config/load.js';
import type { FleetState } from '../../fleet/fleet-state.js';
import { isKnownModel } from '../../routing/resolve-model.js';
import { contextOf } from '../middleware/request-context.js';
import { joinCandidateId } from '../../shared/candidate-id.js';

/** The ids `/v1/models` lists: every virtual model, then every known `provider/model` when exposed. */
export function listModelIds(config: Config, fleet: FleetState): string[] {
  const ids = Object.keys(config.virtualModels);
  if (!config.exposeConcreteModels) return ids;
  const concrete = new Set<string>();
  for (const provider of Object.values(config.providers)) {
    const discovered = fleet.provider(provider.name).models;
    for (const model of [...provider.models, ...discovered]) concrete.add(joinCandidateId(provider.name, model));
  }
  for (const virtualModel of Object.values(config.virtualModels)) {
    for (const candidate of virtualModel.candidates) {
      if (isKnownModel(config, candidate.provider, candidate.model, fleet.provider(candidate.provider).models)) concrete.add(candidate.id);
    }
  }
  return [...ids, ...concrete];
}

/** GET /v1/models */
export function modelsRoute(config: () => Config, fleet: FleetState, startedAt: number) {
  return (_req: Request, res: Response): void => {
    contextOf(res).route = 'models';
    const created = Math.floor(startedAt / 1000);
    res.json({
      object: 'list',
      data: listModelIds(config(), fleet).map((id) => ({ id, object: 'model', created, owned_by: 'boo-gateway' })),
    });
  };
}
