import fs from 'node:fs';
import path from 'node:path';

/**
 * Which bridge serves which network on this host: weft0 for the first network the host joins, weft1 for the
 * next, and so on. Kept in the state dir so a restarted agent adopts the same bridges (and the containers on
 * them) instead of making new ones.
 */
export class BridgeNames {
  private readonly file: string;
  private names: Record<string, string>;

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'bridges.json');
    try {
      this.names = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Record<string, string>;
    } catch {
      this.names = {};
    }
  }

  get(network: string): string {
    const known = this.names[network];
    if (known) return known;
    const used = new Set(Object.values(this.names));
    let i = 0;
    while (used.has(`weft${i}`)) i++;
    this.names[network] = `weft${i}`;
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    this.save();
    return this.names[network]!;
  }

  /** Names the network's bridge (docker0 mode); kept across restarts. */
  set(network: string, bridge: string): void {
    this.names[network] = bridge;
    this.save();
  }

  all(): Record<string, string> {
    return { ...this.names };
  }

  forget(network: string): void {
    delete this.names[network];
    this.save();
  }

  /** Written 0600 whatever the umask (like everything in the state dir). */
  private save(): void {
    fs.writeFileSync(this.file, JSON.stringify(this.names, null, 2) + '\n', { mode: 0o600 });
    fs.chmodSync(this.file, 0o600);
  }
}
