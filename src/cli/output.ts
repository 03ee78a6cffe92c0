/** Human tables and --json output for every command. */

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Prints rows as an aligned table with upper-case headers; an empty list prints only the header. */
export function printTable(columns: string[], rows: Array<Array<string | number | undefined>>): void {
  const cells = [columns.map((c) => c.toUpperCase()), ...rows.map((r) => r.map((v) => (v === undefined ? '-' : String(v))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  for (const r of cells) {
    process.stdout.write(r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]!))).join('  ') + '\n');
  }
}
