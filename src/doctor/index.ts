import { gatherFacts, type GatherOptions } from './gather.js';
import { judge } from './judge.js';
import type { DoctorFacts, Finding } from './types.js';

export { gatherFacts, pickStoreUrl, type GatherOptions } from './gather.js';
export { judge, formatDuration } from './judge.js';
export type { DoctorFacts, Finding } from './types.js';

export interface DoctorReport {
  /** False when any finding is an error. */
  ok: boolean;
  findings: Finding[];
}

/** Gathers this host's facts and judges them. */
export async function runDoctor(o: GatherOptions): Promise<DoctorReport & { facts: DoctorFacts }> {
  const facts = await gatherFacts(o);
  const findings = judge(facts);
  return { ok: !findings.some((f) => !f.ok && f.severity === 'error'), findings, facts };
}
