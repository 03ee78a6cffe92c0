/** Human tables and --json output for every command. */

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Rows as an aligned table with upper-case headers; an empty list gives only the header. */
export function formatTable(columns: string[], rows: Array<Array<string | number | undefined>>): string {
  const cells = [columns.map((c) => c.toUpperCase()), ...rows.map((r) => r.map((v) => (v === undefined ? '-' : String(v))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]!))).join('  ') + '\n').join('');
}

export function printTable(columns: string[], rows: Array<Array<string | number | undefined>>): void {
  process.stdout.write(formatTable(columns, rows));
}
