/**
 * Orders strings by UTF-16 code unit, for sorts that need a stable order and no language's rules. Not
 * `localeCompare`: its first call builds ICU's collator, which paged ~2 MB of ICU's code and data into every
 * agent that sorted its peers (issue 15, agent RSS ≤ 60 MB).
 */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
