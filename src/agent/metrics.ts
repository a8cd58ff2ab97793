/**
 * The agent's Prometheus metrics, rendered from its status object (the one
 * `status --json` prints), so the two views never disagree. Served as
 * `GET /v1/metrics` on the read-only status socket and printed by
 * `mvpn-client status --prometheus` for node_exporter's textfile collector.
 *
 * The control API imports this module (and with it prom-client) on the
 * first metrics request only: an agent nobody scrapes never loads it.
 *
 * The same text is served on the optional TCP listener (config
 * `metrics_listen`, loopback unless `metrics_allow_remote`), started by the
 * daemon only when configured.
 *
 * Times are Unix-seconds timestamps (Prometheus convention): "time since the
 * last successful reconcile" is `time() - mvpn_agent_reconcile_success_timestamp_seconds`,
 * "time left" on a certificate `..._expiry_timestamp_seconds - time()`.
 *
 * Cardinality: labels are `network`, `state` (8 values) and `code` (an
 * MVPN_ error code, one series while the error lasts), so a node exports a
 * few dozen series per network it is in.
 */
import { Gauge, Registry } from 'prom-client';
import type { AgentStatus } from './status.ts';

const STATES = ['stopped', 'starting', 'connecting', 'connected', 'degraded', 'reloading', 'backoff', 'stopping', 'failed'] as const;

const seconds = (iso: string): number => Date.parse(iso) / 1000;

/** The Prometheus text exposition of one status object. A fresh registry each time: the status is the state. */
export async function renderAgentMetrics(s: AgentStatus): Promise<string> {
  const registry = new Registry();
  const registers = [registry];
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) => new Gauge<L>({ name, help, labelNames, registers });

  gauge('mvpn_agent_build_info', 'Always 1; the version of the running mvpn-client agent.', ['version', 'node']).set({ version: s.version, node: s.node }, 1);
  gauge('mvpn_agent_start_time_seconds', 'When the agent daemon started, Unix seconds.').set(seconds(s.started_at));
  gauge('mvpn_agent_ready', '1 once the first reconcile brought every network to connected or a definite failure.').set(s.ready ? 1 : 0);

  if (s.membership) {
    gauge('mvpn_agent_membership_serial', 'Serial of the last accepted membership document.').set(s.membership.serial);
    gauge('mvpn_agent_membership_confirmed_timestamp_seconds', 'Last time a source confirmed the membership document (new document or 304), Unix seconds.').set(seconds(s.membership.fetched_at));
    gauge('mvpn_agent_membership_expiry_timestamp_seconds', 'When the accepted membership document expires, Unix seconds.').set(seconds(s.membership.expires_at));
  }
  if (s.reconcile.last_at !== null) gauge('mvpn_agent_reconcile_timestamp_seconds', 'When the last reconcile ran, Unix seconds.').set(seconds(s.reconcile.last_at));
  if (s.reconcile.last_ok_at != null) {
    gauge('mvpn_agent_reconcile_success_timestamp_seconds', 'When the last reconcile whose discovery succeeded ran, Unix seconds (time since: time() - this).').set(seconds(s.reconcile.last_ok_at));
  }
  if (s.identity_expires_at != null) {
    gauge('mvpn_agent_identity_certificate_expiry_timestamp_seconds', "When the node's API identity certificate expires, Unix seconds; renewal replaces it at two thirds of its life.").set(seconds(s.identity_expires_at));
  }
  const renewalError = gauge('mvpn_agent_renewal_error', '1 with the code of the failure while automatic renewal is failing (retrying); no series otherwise.', ['code']);
  if (s.renewal?.state === 'failed' && s.renewal.last_error) renewalError.set({ code: s.renewal.last_error.code }, 1);
  const reconcileError = gauge('mvpn_agent_reconcile_error', '1 with the code of the failure when the last discovery failed; no series when it succeeded.', ['code']);
  if (s.reconcile.last_error) reconcileError.set({ code: s.reconcile.last_error.code }, 1);

  const up = gauge('mvpn_agent_network_up', "1 while the network's openvpn is connected (or degraded), else 0.", ['network']);
  const state = gauge('mvpn_agent_network_state', 'The network state: 1 for the current one, 0 for the others.', ['network', 'state']);
  const rx = gauge('mvpn_agent_network_received_bytes', "Bytes received on the tunnel by the network's current openvpn.", ['network']);
  const tx = gauge('mvpn_agent_network_sent_bytes', "Bytes sent on the tunnel by the network's current openvpn.", ['network']);
  const restarts = gauge('mvpn_agent_network_openvpn_restarts', 'openvpn restarts of the network since the agent started.', ['network']);
  const error = gauge('mvpn_agent_network_error', "1 with the code of the network's last error while it has one; no series otherwise.", ['network', 'code']);
  const version = gauge('mvpn_agent_network_bundle_version', "The installed bundle's version.", ['network']);
  const expiry = gauge('mvpn_agent_network_bundle_expiry_timestamp_seconds', "When the installed bundle expires (its manifest's expires), Unix seconds; renewal replaces it well before.", ['network']);
  const certExpiry = gauge('mvpn_agent_network_certificate_expiry_timestamp_seconds', "When the installed network certificate expires, Unix seconds.", ['network']);
  const adminDown = gauge('mvpn_agent_network_admin_down', "1 when the network was taken down with 'mvpn-client down'.", ['network']);
  for (const n of s.networks) {
    const network = n.id;
    up.set({ network }, n.state === 'connected' || n.state === 'degraded' ? 1 : 0);
    for (const st of STATES) state.set({ network, state: st }, n.state === st ? 1 : 0);
    rx.set({ network }, n.bytes_in);
    tx.set({ network }, n.bytes_out);
    restarts.set({ network }, n.restarts);
    adminDown.set({ network }, n.admin_down ? 1 : 0);
    if (n.last_error) error.set({ network, code: n.last_error.code }, 1);
    if (n.bundle_version !== null) version.set({ network }, n.bundle_version);
    if (n.bundle_expires_at !== null) expiry.set({ network }, seconds(n.bundle_expires_at));
    if (n.cert_expires_at != null) certExpiry.set({ network }, seconds(n.cert_expires_at));
  }
  return registry.metrics();
}

/** The content type of the text format prom-client writes. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
