import { describeBreakerStateStoreContract } from './breaker-state-store-contract.js';
import { InMemoryBreakerServer } from './in-memory-breaker-state-store.js';

// The SharedBreakers unit tests run on this store: it must answer as the Redis one does
// (test/integration/shared-breaker-state.test.ts runs the same contract against Redis).
describeBreakerStateStoreContract('InMemoryBreakerStateStore', () => {
  const server = new InMemoryBreakerServer();
  return [server.store(), server.store(), server.store()];
});
