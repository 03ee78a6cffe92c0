import type { Command } from 'commander';

/** `weft network create|ls|inspect|rm` — owned by the core work (issue 2). */
export function registerNetwork(program: Command): void {
  program.command('network').description('create, list, inspect and remove networks');
}
