import { emptyState, type PluginState, type StateStore } from '../../src/adapters/docker/state.js';

/** The Docker plugin's saved state in memory (copied on load and save, as a file would be). */
export class MemoryState implements StateStore {
  state: PluginState = emptyState();
  async load() {
    return JSON.parse(JSON.stringify(this.state)) as PluginState;
  }
  async save(s: PluginState) {
    this.state = JSON.parse(JSON.stringify(s)) as PluginState;
  }
}
