/**
 * GENI request RSpecs (v3, and ProtoGENI v2 which has the same request
 * shape) translated into this project's experiment description, so one
 * planner (plan.ts) serves both inputs: request → description → plan.
 *
 * Design notes:
 * - The XML is read with saxes (pure JavaScript, strict, namespace-aware),
 *   loaded only here. A DOCTYPE is refused the moment the parser meets it,
 *   before any of it is used: no DTD, no entity declaration, no external
 *   fetch; saxes itself knows only the five predefined entities and refuses
 *   any other reference. So an entity bomb ("billion laughs") stops at its
 *   DOCTYPE, and memory is bounded by the size cap (MAX_RSPEC_BYTES), the
 *   depth cap and the element cap.
 * - Only elements in the request's own namespace are read; anything in
 *   another namespace (tool extensions: Flack, jFed, emulab, history, …) is
 *   skipped with everything inside it, and so are request elements the
 *   planner does not need (sliver_type, disk_image, services, …).
 * - Which links become VPN LANs: `<link_type name="openvpn">` (Layer 2),
 *   `openvpn-l3` (Layer 3), or a link whose interfaces belong to nodes of
 *   more than one component manager (Layer 2: the experimenter need not
 *   know). Every other link is left alone and reported as such.
 * - A VPN member's `<ip address netmask type="ipv4">` is its fixed address;
 *   the LAN's subnet comes from address and netmask, and members must agree
 *   on it. Members without an address are allocated by the hub.
 * - Problems are named by element and line; planner errors about a node or
 *   a LAN get the line of the `<node>` or `<link>` they came from.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { isMvpnError, MvpnError, RequestError, type ErrorCode } from '../../errors.ts';
import { formatCidr, ipToInt, maskOf } from '../alloc.ts';
import { planExperiment, TestbedShape, type Experiment, type Plan } from './plan.ts';

/** The largest request accepted (bytes). Real requests are a few kB to a few hundred kB. */
export const MAX_RSPEC_BYTES = 4 << 20;
const MAX_DEPTH = 64;
const MAX_ELEMENTS = 200_000;

export const GENI_V3_NS = 'http://www.geni.net/resources/rspec/3';
export const PROTOGENI_V2_NS = 'http://www.protogeni.net/resources/rspec/2';
const REQUEST_NS = new Set([GENI_V3_NS, PROTOGENI_V2_NS]);

const NODE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export const TestbedsFileSchema = z.strictObject({
  testbeds: z
    .array(
      z.strictObject({
        ...TestbedShape,
        /** The URN nodes' component_manager_id and links' <component_manager name> use for this testbed. */
        component_manager: z.string().regex(/^urn:publicid:IDN\+[^\s]+$/, 'expected a component manager URN (urn:publicid:IDN+…+authority+cm)'),
      }),
    )
    .min(1),
});
export type TestbedsFile = z.infer<typeof TestbedsFileSchema>;

/** Validates a testbeds file (zod), every problem named by its path; component managers must be distinct. */
export function parseTestbedsFile(value: unknown, file: string): TestbedsFile {
  const r = TestbedsFileSchema.safeParse(value);
  if (!r.success) {
    throw new RequestError('MVPN_SCHEMA_INVALID', `testbeds file ${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ')}`);
  }
  const seen = new Map<string, string>();
  for (const t of r.data.testbeds) {
    const other = seen.get(t.component_manager);
    if (other !== undefined) throw new RequestError('MVPN_SCHEMA_INVALID', `testbeds file ${file}: testbeds ${other} and ${t.name} both say component manager ${t.component_manager}`);
    seen.set(t.component_manager, t.name);
  }
  return r.data;
}

/** An element of the request namespace, with its unprefixed attributes and where it starts. */
interface El {
  readonly local: string;
  readonly attrs: ReadonlyMap<string, string>;
  readonly line: number;
  readonly column: number;
  readonly children: El[];
}

export interface IgnoredLink {
  readonly link: string;
  readonly line: number;
  readonly reason: string;
}

export interface RequestTranslation {
  /** null when no link of the request is a VPN LAN (nothing to plan). */
  readonly experiment: Experiment | null;
  /** Which namespace the request used. */
  readonly schema: 'geni-v3' | 'protogeni-v2';
  /** Links left alone, and why. */
  readonly ignored: readonly IgnoredLink[];
  /** Nodes of the request in no VPN LAN (islands, nodes on ordinary links only). */
  readonly unplanned: readonly string[];
  /** Where each node and VPN LAN came from (for error messages). */
  readonly origin: { readonly nodes: ReadonlyMap<string, number>; readonly lans: ReadonlyMap<string, number> };
}

export interface RequestPlan extends RequestTranslation {
  readonly plan: Plan;
}

function bad(code: ErrorCode, message: string, context: Record<string, unknown> = {}): RequestError {
  return new RequestError(code, `request RSpec: ${message}`, { context });
}

const where = (e: El) => `line ${e.line}`;
const tag = (e: El, attr = 'client_id') => (e.attrs.has(attr) ? `<${e.local} ${attr}="${e.attrs.get(attr)}">` : `<${e.local}>`);

/** The request's elements in its own namespace, as a small tree (saxes, loaded here only). Bytes must be UTF-8. */
async function parseXml(input: string | Uint8Array): Promise<{ root: El; ns: string }> {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
  if (size > MAX_RSPEC_BYTES) throw bad('MVPN_RSPEC_TOO_LARGE', `${size} bytes, more than the ${MAX_RSPEC_BYTES} accepted`, { size, limit: MAX_RSPEC_BYTES });
  let text: string;
  try {
    text = typeof input === 'string' ? input : new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch {
    throw bad('MVPN_RSPEC_INVALID', 'the document is not UTF-8 text');
  }
  const { SaxesParser } = await import('saxes');
  const parser = new SaxesParser({ xmlns: true, position: true });
  const stack: (El | null)[] = [];
  let root: { el: El; ns: string } | undefined;
  let start = { line: 1, column: 1 };
  let elements = 0;
  parser.on('doctype', () => {
    throw bad('MVPN_RSPEC_DOCTYPE', `line ${parser.line}: a DOCTYPE is refused (no DTDs, entity declarations or external references in a request); remove it`, { line: parser.line });
  });
  parser.on('error', (err) => {
    const msg = err.message.replace(/^\d+:\d+: /, '');
    throw bad('MVPN_RSPEC_INVALID', `not well-formed XML at line ${parser.line}, column ${parser.column + 1}: ${msg}`, { line: parser.line, column: parser.column + 1 });
  });
  parser.on('opentagstart', (t) => {
    start = { line: parser.line, column: Math.max(1, parser.column - t.name.length) };
    if (++elements > MAX_ELEMENTS) throw bad('MVPN_RSPEC_TOO_LARGE', `more than ${MAX_ELEMENTS} elements`, { limit: MAX_ELEMENTS });
    if (stack.length >= MAX_DEPTH) throw bad('MVPN_RSPEC_TOO_LARGE', `line ${parser.line}: elements nest deeper than ${MAX_DEPTH} levels`, { limit: MAX_DEPTH });
  });
  parser.on('opentag', (t) => {
    const parent = stack[stack.length - 1];
    const uri = t.uri ?? '';
    // Outside the request namespace, or inside something skipped: skip it and everything in it.
    if (parent === null || (stack.length > 0 && uri !== root!.ns)) {
      stack.push(null);
      return;
    }
    const attrs = new Map<string, string>();
    for (const a of Object.values(t.attributes)) if (a.prefix === '' && a.uri === '') attrs.set(a.local, a.value);
    const el: El = { local: t.local ?? t.name, attrs, ...start, children: [] };
    if (stack.length === 0) root = { el, ns: uri };
    else parent!.children.push(el);
    stack.push(el);
  });
  parser.on('closetag', () => {
    stack.pop();
  });
  parser.write(text.startsWith('\uFEFF') ? text.slice(1) : text).close();
  if (!root) throw bad('MVPN_RSPEC_INVALID', 'the document has no root element');
  return { root: root.el, ns: root.ns };
}

function netmaskPrefix(mask: string): number | undefined {
  if (isIP(mask) !== 4) return undefined;
  const n = ipToInt(mask);
  for (let p = 0; p <= 32; p++) if (maskOf(p) === n) return p;
  return undefined;
}

/** A link client_id as a network id (plan.ts LAN names: a letter, then up to 11 of [a-z0-9-]), unique among `taken`. */
function lanName(clientId: string, taken: ReadonlySet<string>): string {
  let base = clientId.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^[^a-z]+/, '').replace(/-+$/, '');
  if (base === '') base = 'lan';
  base = base.slice(0, 12).replace(/-+$/, '');
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) {
    const suffix = `-${i}`;
    const name = `${base.slice(0, 12 - suffix.length).replace(/-+$/, '')}${suffix}`;
    if (!taken.has(name)) return name;
  }
}

interface Iface {
  readonly el: El;
  readonly node: El;
  readonly ip: { readonly el: El; readonly address: string; readonly prefix: number } | undefined;
}

/** The request as an experiment description for the planner (no planning yet). */
export async function translateRequest(input: string | Uint8Array, testbedsFile: TestbedsFile): Promise<RequestTranslation> {
  const { root, ns } = await parseXml(input);
  if (root.local !== 'rspec' || !REQUEST_NS.has(ns)) {
    throw bad('MVPN_RSPEC_INVALID', `${where(root)}: the root element is <${root.local}> in namespace ${JSON.stringify(ns)}; expected <rspec> in ${GENI_V3_NS} (GENI v3) or ${PROTOGENI_V2_NS} (ProtoGENI v2)`);
  }
  const type = root.attrs.get('type');
  if (type !== undefined && type !== 'request') throw bad('MVPN_RSPEC_INVALID', `${where(root)}: <rspec type="${type}"> is not a request (give the request RSpec, not a manifest or advertisement)`);
  const byCm = new Map(testbedsFile.testbeds.map((t) => [t.component_manager, t.name]));
  const need = (e: El, attr: string): string => {
    const v = e.attrs.get(attr);
    if (v === undefined || v === '') throw bad('MVPN_RSPEC_INVALID', `${where(e)}: <${e.local}> has no ${attr}`, { line: e.line });
    return v;
  };

  // Nodes and their interfaces; client_ids are unique per kind (node, interface, link).
  const nodes = new Map<string, El>();
  const ifaces = new Map<string, Iface>();
  for (const n of root.children.filter((c) => c.local === 'node')) {
    const id = need(n, 'client_id');
    const dup = nodes.get(id);
    if (dup) throw bad('MVPN_RSPEC_INVALID', `${where(n)}: duplicate node client_id "${id}" (first at ${where(dup)})`, { node: id, line: n.line });
    nodes.set(id, n);
    for (const i of n.children.filter((c) => c.local === 'interface')) {
      const iid = need(i, 'client_id');
      const seen = ifaces.get(iid);
      if (seen) throw bad('MVPN_RSPEC_INVALID', `${where(i)}: duplicate interface client_id "${iid}" (first at ${where(seen.el)})`, { interface: iid, line: i.line });
      ifaces.set(iid, { el: i, node: n, ip: interfaceIp(i) });
    }
  }

  const links = new Map<string, El>();
  const ignored: IgnoredLink[] = [];
  const lans: Experiment['lans'][number][] = [];
  const lanLines = new Map<string, number>();
  const inLan = new Set<string>();
  const linkOf = new Map<string, El>();
  for (const l of root.children.filter((c) => c.local === 'link')) {
    const id = need(l, 'client_id');
    const dup = links.get(id);
    if (dup) throw bad('MVPN_RSPEC_INVALID', `${where(l)}: duplicate link client_id "${id}" (first at ${where(dup)})`, { link: id, line: l.line });
    links.set(id, l);
    const refs = l.children.filter((c) => c.local === 'interface_ref').map((r) => {
      const iid = need(r, 'client_id');
      const i = ifaces.get(iid);
      if (!i) throw bad('MVPN_RSPEC_INVALID', `${where(r)}: link "${id}" has <interface_ref client_id="${iid}">, which names no interface of any node`, { link: id, interface: iid, line: r.line });
      const other = linkOf.get(iid);
      if (other) {
        throw bad('MVPN_RSPEC_INVALID', `${where(r)}: interface ${iid} is in link "${id}" and in link "${other.attrs.get('client_id')}" (${where(other)}); an interface belongs to one link`, {
          link: id,
          interface: iid,
          line: r.line,
        });
      }
      linkOf.set(iid, l);
      return i;
    });
    const types = l.children.filter((c) => c.local === 'link_type').map((t) => t.attrs.get('name') ?? '');
    const cms = [...new Set(refs.map((i) => i.node.attrs.get('component_manager_id')).filter((c): c is string => c !== undefined && c !== ''))];
    let layer: 2 | 3;
    let reason: string;
    if (types.includes('openvpn') && types.includes('openvpn-l3')) {
      throw bad('MVPN_RSPEC_INVALID', `${where(l)}: link "${id}" says both link_type openvpn and openvpn-l3; give one`, { link: id, line: l.line });
    } else if (types.includes('openvpn-l3')) [layer, reason] = [3, `link "${id}": link_type openvpn-l3`];
    else if (types.includes('openvpn')) [layer, reason] = [2, `link "${id}": link_type openvpn`];
    else if (cms.length > 1) [layer, reason] = [2, `link "${id}": spans ${cms.length} component managers`];
    else {
      ignored.push({ link: id, line: l.line, reason: types.length > 0 ? `link_type ${types.join(',')}, one component manager` : 'one component manager, no openvpn link_type' });
      continue;
    }
    for (const cm of l.children.filter((c) => c.local === 'component_manager')) {
      const urn = need(cm, 'name');
      if (!byCm.has(urn)) throw bad('MVPN_RSPEC_INVALID', `${where(cm)}: link "${id}" names component manager ${urn}, which is in no testbed of the testbeds file`, { link: id, line: cm.line });
    }
    if (refs.length === 0) throw bad('MVPN_RSPEC_INVALID', `${where(l)}: VPN link "${id}" has no interface_ref`, { link: id, line: l.line });
    const lan = lanName(id, new Set(lans.map((x) => x.name)));
    let subnet: { cidr: string; from: Iface } | undefined;
    const members: { node: string; address?: string; interface: string }[] = [];
    for (const i of refs) {
      const nodeId = i.node.attrs.get('client_id')!;
      if (!NODE_RE.test(nodeId)) {
        throw bad('MVPN_RSPEC_INVALID', `${where(i.node)}: node client_id "${nodeId}" cannot be a node id (letters, digits, ".", "_", "-"; at most 63) and it is in VPN link "${id}"`, { node: nodeId, line: i.node.line });
      }
      const cm = i.node.attrs.get('component_manager_id');
      if (cm === undefined || cm === '') {
        throw bad('MVPN_RSPEC_INVALID', `${where(i.node)}: ${tag(i.node)} is in VPN link "${id}" but has no component_manager_id; say which testbed it is on`, { node: nodeId, line: i.node.line });
      }
      if (!byCm.has(cm)) {
        throw bad('MVPN_RSPEC_INVALID', `${where(i.node)}: ${tag(i.node)} is on component manager ${cm}, which is in no testbed of the testbeds file (add it as "component_manager")`, { node: nodeId, line: i.node.line });
      }
      const twice = members.find((m) => m.node === nodeId);
      if (twice) throw bad('MVPN_RSPEC_INVALID', `${where(i.el)}: node "${nodeId}" is in link "${id}" twice (interfaces ${twice.interface} and ${i.el.attrs.get('client_id')})`, { node: nodeId, line: i.el.line });
      if (i.ip) {
        const cidr = formatCidr({ base: (ipToInt(i.ip.address) & maskOf(i.ip.prefix)) >>> 0, prefix: i.ip.prefix });
        if (subnet && subnet.cidr !== cidr) {
          const a = subnet.from;
          throw bad(
            'MVPN_RSPEC_INVALID',
            `${where(i.ip.el)}: link "${id}": interface ${i.el.attrs.get('client_id')} is on ${cidr} but interface ${a.el.attrs.get('client_id')} (${where(a.ip!.el)}) is on ${subnet.cidr}; members of one LAN must share a subnet`,
            { link: id, line: i.ip.el.line },
          );
        }
        subnet ??= { cidr, from: i };
      }
      members.push({ node: nodeId, ...(i.ip ? { address: i.ip.address } : {}), interface: i.el.attrs.get('client_id')! });
      inLan.add(nodeId);
    }
    lanLines.set(lan, l.line);
    lans.push({ name: lan, ...(subnet ? { subnet: subnet.cidr } : {}), layer, reason, members });
  }

  const nodeLines = new Map([...nodes].map(([id, e]) => [id, e.line]));
  const unplanned = [...nodes.keys()].filter((n) => !inLan.has(n));
  const schema = ns === GENI_V3_NS ? 'geni-v3' : 'protogeni-v2';
  const origin = { nodes: nodeLines, lans: lanLines };
  if (lans.length === 0) return { experiment: null, schema, ignored, unplanned, origin };
  const experiment: Experiment = {
    testbeds: testbedsFile.testbeds.map(({ component_manager: _cm, ...t }) => t),
    nodes: [...nodes].filter(([id]) => inLan.has(id)).map(([id, e]) => ({ name: id, testbed: byCm.get(e.attrs.get('component_manager_id')!)! })),
    lans,
  };
  return { experiment, schema, ignored, unplanned, origin };
}

/** The interface's IPv4 address and prefix (first `<ip type="ipv4">`), checked; undefined when it gives none. */
function interfaceIp(i: El): Iface['ip'] {
  for (const ip of i.children.filter((c) => c.local === 'ip')) {
    const type = ip.attrs.get('type') ?? 'ipv4';
    if (type !== 'ipv4') continue;
    const address = ip.attrs.get('address') ?? '';
    const netmask = ip.attrs.get('netmask');
    const name = i.attrs.get('client_id');
    if (isIP(address) !== 4) throw bad('MVPN_RSPEC_INVALID', `${where(ip)}: interface ${name}: <ip address="${address}"> is not an IPv4 address`, { interface: name, line: ip.line });
    if (netmask === undefined) throw bad('MVPN_RSPEC_INVALID', `${where(ip)}: interface ${name}: <ip address="${address}"> has no netmask (the LAN's subnet comes from it)`, { interface: name, line: ip.line });
    const prefix = netmaskPrefix(netmask);
    if (prefix === undefined || prefix > 30) {
      throw bad('MVPN_RSPEC_INVALID', `${where(ip)}: interface ${name}: netmask "${netmask}" is not a usable IPv4 netmask (dotted, contiguous, /30 or shorter)`, { interface: name, line: ip.line });
    }
    return { el: ip, address, prefix };
  }
  return undefined;
}

/**
 * A request planned: translated, then the one planner. A planner error about
 * a node or a LAN gets the line it came from; nothing is applied either way.
 */
export async function planRequest(input: string | Uint8Array, testbedsFile: TestbedsFile): Promise<RequestPlan> {
  const t = await translateRequest(input, testbedsFile);
  if (t.experiment === null) return { ...t, plan: { servers: [], lans: [], links: [] } };
  try {
    return { ...t, plan: planExperiment(t.experiment) };
  } catch (err) {
    if (!isMvpnError(err)) throw err;
    const { node, lan } = err.context as { node?: unknown; lan?: unknown };
    const line = typeof lan === 'string' ? t.origin.lans.get(lan) : typeof node === 'string' ? t.origin.nodes.get(node) : undefined;
    const what = typeof lan === 'string' ? `<link> of LAN ${lan}` : `<node client_id="${String(node)}">`;
    if (line === undefined) throw err;
    throw new MvpnError(err.code, `${err.message.replace(/^experiment: /, 'request RSpec: ')} (${what} at line ${line})`, { context: { ...err.context, line }, cause: err });
  }
}

/** The plan's note on the request: links left alone and nodes in no VPN LAN, for the plan's text output. */
export function formatRequestNotes(r: RequestTranslation): string {
  const lines = ['request:', `  schema ${r.schema}`];
  for (const l of r.ignored) lines.push(`  link ${l.link} (line ${l.line}) left alone: ${l.reason}`);
  if (r.unplanned.length > 0) lines.push(`  nodes in no VPN LAN: ${r.unplanned.join(', ')}`);
  if (r.experiment === null) lines.push('  no link is a VPN LAN (link_type openvpn / openvpn-l3, or spanning component managers): nothing to plan');
  return lines.join('\n') + '\n';
}

/** The JSON note on the request that goes beside the plan. */
export function requestNotes(r: RequestTranslation): { schema: string; ignored_links: readonly IgnoredLink[]; unplanned_nodes: readonly string[] } {
  return { schema: r.schema, ignored_links: r.ignored, unplanned_nodes: r.unplanned };
}
