import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ip = (...args: string[]) => run('ip', args);

export type Host = { name: string; netns: string; address: string };

/**
 * A small LAN of network namespaces made for one test: a bridge in a namespace of its own, one
 * namespace per host wired to it by a veth pair, and this (root) namespace wired to it too, with
 * the subnet's first address, so that the test and its PostgreSQL reach every host and back.
 * Names and the subnet are random: concurrent runs never meet. `remove()` deletes everything.
 */
export class Lan {
  readonly hosts = new Map<string, Host>();

  private constructor(
    private readonly tag: string,
    readonly subnet: string,
    readonly gateway: string,
  ) {}

  static async create(hostNames: string[]): Promise<Lan> {
    const tag = crypto.randomBytes(3).toString('hex');
    const octet = 16 + crypto.randomInt(200);
    const prefix = `10.213.${octet}`;
    const lan = new Lan(tag, `${prefix}.0/24`, `${prefix}.1`);
    try {
      await ip('netns', 'add', lan.bridgeNs);
      await lan.exec(lan.bridgeNs, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
      await lan.exec(lan.bridgeNs, 'ip', 'link', 'set', 'br0', 'up');
      // the root namespace's leg keeps its end here; its peer joins the bridge
      await lan.wire(`sl${tag}r`, undefined, `${lan.gateway}/24`);
      for (const [i, name] of hostNames.entries()) {
        const host = { name, netns: `sl${tag}-${name}`, address: `${prefix}.${11 + i}` };
        await ip('netns', 'add', host.netns);
        await lan.exec(host.netns, 'ip', 'link', 'set', 'lo', 'up');
        await lan.wire(`sl${tag}h${i}`, host.netns, `${host.address}/24`);
        lan.hosts.set(name, host);
      }
      return lan;
    } catch (err) {
      await lan.remove();
      throw err;
    }
  }

  private get bridgeNs(): string {
    return `sl${this.tag}-lan`;
  }

  host(name: string): Host {
    const host = this.hosts.get(name);
    if (!host) throw new Error(`no host ${name}`);
    return host;
  }

  /** A veth pair: `name` in `netns` (the root namespace when undefined) with `address`, its peer on the bridge. */
  private async wire(name: string, netns: string | undefined, address: string): Promise<void> {
    const peer = `${name}b`;
    await ip('link', 'add', name, 'type', 'veth', 'peer', 'name', peer);
    await ip('link', 'set', peer, 'netns', this.bridgeNs);
    await this.exec(this.bridgeNs, 'ip', 'link', 'set', peer, 'master', 'br0');
    await this.exec(this.bridgeNs, 'ip', 'link', 'set', peer, 'up');
    if (netns) await ip('link', 'set', name, 'netns', netns);
    const inside = (...args: string[]) => (netns ? this.exec(netns, 'ip', ...args) : ip(...args));
    await inside('addr', 'add', address, 'dev', name);
    await inside('link', 'set', name, 'up');
  }

  /** Runs a command inside a namespace. */
  exec(netns: string, command: string, ...args: string[]) {
    return run('ip', ['netns', 'exec', netns, command, ...args]);
  }

  /** Deleting the namespaces deletes their veth pairs, the root namespace's leg included. */
  async remove(): Promise<void> {
    for (const host of this.hosts.values()) await ip('netns', 'delete', host.netns).catch(() => undefined);
    await ip('netns', 'delete', this.bridgeNs).catch(() => undefined);
    await ip('link', 'delete', `sl${this.tag}r`).catch(() => undefined);
  }
}
