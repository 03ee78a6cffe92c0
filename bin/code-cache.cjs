'use strict';
// Runs the CLI's CommonJS bundle (dist/bundle/main.cjs) with V8's code cache. Node 20 has no compile cache of
// its own (module.enableCompileCache came in Node 22), and compiling the bundle was a fifth of an agent's
// start (issue 15: `weft agent` ready ≤ 300 ms). The cache holds the bytecode of every function the run that
// saved it had compiled by then: the agent saves it once it is ready, any other command when it exits, each
// kind in a file of its own (the agent runs with other V8 flags, and V8 refuses a cache made under other flags).
// It is written only when there was none or V8 refused it, beside the bundle, and never required: a read-only
// install, a refused or missing cache just means compiling as before. WEFT_NO_CODE_CACHE=1 turns it off.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

/** Runs `file` as a CommonJS module; says whether a code cache was used ('hit'), missing ('miss') or refused. */
function runBundle(file, kind) {
  const source = fs.readFileSync(file, 'utf8');
  const st = fs.statSync(file);
  // V8 checks its own version, its flags and the source's length, not the source itself: the bundle's size
  // and modification time are in the cache's name, and a new build deletes the old caches (scripts/bundle.mjs)
  const cacheFile = `${file}.${kind}-${process.version}-${process.arch}-${st.size}-${Math.floor(st.mtimeMs)}.v8cache`;
  const off = process.env.WEFT_NO_CODE_CACHE === '1';
  let cachedData;
  try {
    if (!off) cachedData = fs.readFileSync(cacheFile);
  } catch {
    // none yet
  }
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new vm.Script(wrapped, { filename: file, cachedData, importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER });
  const outcome = cachedData === undefined ? 'miss' : script.cachedDataRejected ? 'rejected' : 'hit';
  if (!off && outcome !== 'hit') {
    const save = () => {
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      try {
        fs.writeFileSync(tmp, script.createCachedData(), { mode: 0o644 });
        fs.renameSync(tmp, cacheFile);
      } catch {
        fs.rmSync(tmp, { force: true });
      }
    };
    // the agent calls this at ready, before it turns the optimizing compiler back on (a flag change)
    if (kind === 'agent') globalThis[Symbol.for('weft.saveCodeCache')] = save;
    else process.once('exit', save);
  }
  const mod = { exports: {}, filename: file, id: file, loaded: false };
  script.runInThisContext().call(mod.exports, mod.exports, createRequire(file), mod, file, path.dirname(file));
  return outcome;
}

module.exports = { runBundle };
