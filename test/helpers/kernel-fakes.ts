/** A kernel watch whose tokens a test moves by hand (`bump`); `off` makes every token undefined. */
export function fakeKernel() {
  const counts = new Map<string, number>();
  const k = {
    off: false,
    bump: (kind: string) => counts.set(kind, (counts.get(kind) ?? 0) + 1),
    token: (kinds: readonly string[]) => (k.off ? undefined : kinds.map((x) => `${x}=${counts.get(x) ?? 0}`).join(' ')),
  };
  return k;
}
