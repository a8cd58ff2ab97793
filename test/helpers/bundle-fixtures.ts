/**
 * Valid bundles and membership documents made with the real building code
 * (src/bundle/build.ts) and a real test PKI, as the starting point for the
 * bundle tests, the adversarial corpus and the fuzz test. One fixture holds
 * one signing key, one PKI (several nodes) and a fixed `now` that every
 * verification in a test should use.
 */
import { buildBundle, buildMembership, type BuildBundleInput, type BuiltBundle } from '../../src/bundle/build.ts';
import type { MembershipDoc, NetworkSpec } from '../../src/bundle/schema.ts';
import { generateSigningKey, parseAnchor, anchorToString, type Anchor, type SigningKey } from '../../src/bundle/sign.ts';
import { renderClientConfig } from '../../src/openvpn/client-config.ts';
import type { InstalledPaths } from '../../src/bundle/install.ts';
import { caCn, serverCn } from '../../src/bundle/names.ts';
import { makeTestPki, type TestPki } from './pki-fixtures.ts';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

export interface BundleFixture {
  readonly now: Date;
  readonly signingKey: SigningKey;
  readonly anchor: Anchor;
  readonly pki: TestPki;
  /** A second, unrelated PKI (another network's CA) for "wrong CA" cases. */
  readonly otherPki: TestPki;
  readonly nodeId: string;
  readonly network: string;
}

export async function makeBundleFixture(opts: { nodes?: readonly string[]; now?: Date } = {}): Promise<BundleFixture> {
  const now = opts.now ?? new Date(Math.floor(Date.now() / 1000) * 1000);
  const nodes = opts.nodes ?? ['pc101', 'pc102'];
  const [pki, otherPki] = await Promise.all([
    makeTestPki({ clients: [...nodes], serverCn: serverCn('lab1'), caCn: caCn('lab1'), now }),
    // Another CA with the same name: what an attacker would make for lab1.
    makeTestPki({ clients: [...nodes], serverCn: serverCn('lab1'), caCn: caCn('lab1'), now }),
  ]);
  const signingKey = generateSigningKey();
  return { now, signingKey, anchor: parseAnchor(anchorToString(signingKey)), pki, otherPki, nodeId: nodes[0]!, network: 'lab1' };
}

export function makeSpec(network = 'lab1', overrides: Partial<NetworkSpec> = {}): NetworkSpec {
  return {
    schema: 1,
    id: network,
    name: `test network ${network}`,
    dev_type: 'tap',
    proto: 'udp',
    remotes: [
      { host: '198.18.0.1', port: 1194 },
      { host: 'vpn.example.org', port: 1195 },
    ],
    server_cn: serverCn(network),
    address: { ipv4: '192.0.2.10/24' },
    server_tunnel_ip: '192.0.2.1',
    ciphers: ['AES-256-GCM', 'CHACHA20-POLY1305'],
    keepalive: { interval: 10, timeout: 60 },
    allow_pushed_routes: false,
    ...overrides,
  };
}

/** The input buildBundle takes for `node` on `network`, valid at fixture time. */
export function bundleInput(f: BundleFixture, o: { node?: string; network?: string; version?: number; spec?: NetworkSpec; central?: boolean; pki?: TestPki } = {}): BuildBundleInput {
  const node = o.node ?? f.nodeId;
  const network = o.network ?? f.network;
  const pki = o.pki ?? f.pki;
  const client = pki.clients[node];
  if (!client) throw new Error(`fixture has no client ${node}`);
  return {
    signingKey: f.signingKey,
    manifest: {
      node,
      network,
      version: o.version ?? 1,
      created: new Date(f.now.getTime() - HOUR).toISOString(),
      expires: new Date(f.now.getTime() + 7 * DAY).toISOString(),
      key_origin: o.central ? 'central' : 'node',
    },
    spec: o.spec ?? makeSpec(network),
    caPem: pki.ca.certPem,
    nodeCertPem: client.certPem,
    tlsCryptV2ClientKey: client.tlsCryptV2Key,
    crlPem: pki.crlPem,
    ...(o.central ? { nodeKeyPem: client.keyPem } : {}),
  };
}

export function makeBundle(f: BundleFixture, o: Parameters<typeof bundleInput>[1] = {}): Promise<BuiltBundle> {
  return buildBundle(bundleInput(f, o));
}

export function membershipDoc(f: BundleFixture, entries: { network?: string; bundle: BuiltBundle; version?: number }[], o: { serial?: number; node?: string } = {}): MembershipDoc {
  return {
    node: o.node ?? f.nodeId,
    serial: o.serial ?? 1,
    issued_at: new Date(f.now.getTime() - HOUR).toISOString(),
    expires_at: new Date(f.now.getTime() + DAY).toISOString(),
    networks: entries.map((e) => {
      const network = e.network ?? f.network;
      return {
        id: network,
        name: `test network ${network}`,
        bundle: { version: e.version ?? 1, sha256: e.bundle.sha256, size: e.bundle.size, url: `/v1/bundles/${network}/${e.version ?? 1}` },
      };
    }),
  };
}

export function makeMembership(f: BundleFixture, entries: Parameters<typeof membershipDoc>[1], o: Parameters<typeof membershipDoc>[2] = {}): Buffer {
  return buildMembership(membershipDoc(f, entries, o), f.signingKey);
}

/** The renderer the agent would pass to installBundle, with runtime paths under `runtimeDir`. */
export function testRenderer(runtimeDir = '/run/mvpn-client'): (spec: NetworkSpec, dir: string, files: InstalledPaths) => string {
  return (spec, _dir, files) => renderClientConfig(spec, { ...files, mgmtSocket: `${runtimeDir}/${spec.id}.mgmt`, dev: `mv-${spec.id}` });
}
