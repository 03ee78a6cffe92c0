import { runCli } from './program.js';

/** The `weft` executable's full CLI (bin/weft takes the fast path for plain attach/detach first). */
void runCli(process.argv).then((outcome) => {
  // not exitCode after an error: a connect still pending to an unreachable store (SYNs dropped) would hold the
  // process for minutes
  if (outcome.failed) process.exit(outcome.code);
  if (outcome.code !== 0) process.exitCode = outcome.code;
});
