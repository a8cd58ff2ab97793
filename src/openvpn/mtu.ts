/**
 * The LAN's MTU and how its frames cross the underlay (issue 13; the why is
 * in ARCHITECTURE.md, "Full-size frames over any path MTU").
 *
 * The experiment LAN is Ethernet with 1500-byte frames, and every underlay
 * path of at least PATH_MTU_FLOOR bytes must carry them, also when a router
 * on the way drops large packets without the ICMP that would tell the
 * sender (a PMTU black hole). openvpn's own fragmentation does that:
 * `fragment N mtu` keeps every datagram it sends, IP and UDP headers
 * included, at N bytes or less, and the peer reassembles; `mssfix N mtu`
 * clamps TCP so its segments fit one datagram and are never split. Both
 * peers must fragment (the fragment header is part of every data packet),
 * so the value travels in the signed network spec and the server renders
 * the same lines: the one place that writes them is `mtuLines`.
 *
 * openvpn's kernel data channel (DCO) does not fragment: with `fragment`
 * openvpn 2.6 stays in user space (no DCO here anyway; see ARCHITECTURE.md).
 */

/** The smallest path MTU the LAN is built for (IPv6's minimum link MTU; IPv4 paths below it are rare). */
export const PATH_MTU_FLOOR = 1280;
/** The LAN's MTU unless a network says otherwise: Ethernet's, which experiment software assumes. */
export const LAN_MTU = 1500;

export interface DataPlane {
  /** The LAN interface MTU (`tun-mtu`); undefined: openvpn's default (1500). */
  readonly mtu?: number | undefined;
  /** The largest underlay datagram, headers included; undefined: no fragmentation (TCP networks, networks made before issue 13). */
  readonly fragment?: number | undefined;
}

/** The openvpn lines for a data plane, the same for server and client. */
export function mtuLines(d: DataPlane): string[] {
  return [...(d.mtu === undefined ? [] : [`tun-mtu ${d.mtu}`]), ...(d.fragment === undefined ? [] : [`fragment ${d.fragment} mtu`, `mssfix ${d.fragment} mtu`])];
}

/**
 * The UDP socket buffers openvpn asks for (SO_SNDBUF/SO_RCVBUF; the kernel
 * caps the request at net.core.[rw]mem_max and doubles it): on a busy host a
 * single-threaded openvpn is not always on a CPU when datagrams arrive, and
 * the kernel's default buffer (212992 bytes, ~90 full datagrams, a few
 * milliseconds at LAN speed) overflowed tens of thousands of times in a 3 s
 * transfer (UdpRcvbufErrors), halving TCP. Even capped at the default
 * rmem_max the request doubles the buffer; the agent never raises the
 * host-wide limits itself.
 */
export const SOCKET_BUFFER = 2 * 1024 * 1024;

/**
 * Data-channel tuning every end renders (bench/dataplane.ts measured it
 * against the plain configs, ARCHITECTURE.md): a tap queue of 1000 frames
 * instead of openvpn's 100, so a burst of fragments is queued rather than
 * dropped; for UDP `fast-io` (write to the socket without polling first) and
 * SOCKET_BUFFER. TCP keeps the kernel's buffer autotuning, which a fixed
 * size would switch off.
 */
export function fastPathLines(proto: 'udp' | 'tcp'): string[] {
  return ['txqueuelen 1000', ...(proto === 'udp' ? ['fast-io', `sndbuf ${SOCKET_BUFFER}`, `rcvbuf ${SOCKET_BUFFER}`] : [])];
}
