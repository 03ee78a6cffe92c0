import { Command, CommanderError } from 'commander';
import { WeftError } from '../util/errors.js';
import { registerNetwork } from './network.js';
import { registerDocker } from './docker.js';
import { registerAgent } from './agent.js';
import { registerEndpoints } from './endpoints.js';
import { registerDemo } from './demo.js';
import { registerDoctor } from './doctor.js';

/**
 * weft's command line: parse, call, print. Each command group lives in its own module and adds itself
 * here; every error ends as one line on stderr and a non-zero exit.
 */
const program = new Command('weft')
  .description('one network for containers on many hosts')
  .showHelpAfterError(false)
  .exitOverride();

registerNetwork(program);
registerDocker(program);
registerAgent(program);
registerEndpoints(program);
registerDemo(program);
registerDoctor(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // commander already printed its message (or the help / version text)
    process.exitCode = err.exitCode;
  } else {
    const msg = err instanceof WeftError ? err.message : err instanceof Error ? err.message : String(err);
    process.stderr.write(`weft: ${msg.split('\n')[0]}\n`);
    if (process.env.WEFT_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  }
}
