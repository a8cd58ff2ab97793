import type { CliGroup } from '../command.ts';
import { serverAnchorCommand } from './anchor.ts';
import { apiRollCaCommand } from './api-roll-ca.ts';
import { serverExportCommand } from './export.ts';
import { serverInitCommand } from './init.ts';
import { serverJoinMaterialCommand } from './join-material.ts';
import { linkGroup } from './link.ts';
import { serverPlanCommand } from './plan.ts';
import { networkCreateCommand } from './network-create.ts';
import { networkDeleteCommand } from './network-delete.ts';
import { networkDownCommand } from './network-down.ts';
import { networkListCommand } from './network-list.ts';
import { networkPurgeCommand } from './network-purge.ts';
import { networkRollCaCommand } from './network-roll-ca.ts';
import { networkShowCommand } from './network-show.ts';
import { networkUpCommand } from './network-up.ts';
import { networkUpdateCommand } from './network-update.ts';
import { nodeAddCommand } from './node-add.ts';
import { nodeListCommand } from './node-list.ts';
import { nodeRemoveCommand } from './node-remove.ts';
import { nodeRevokeCommand } from './node-revoke.ts';
import { nodeSetRemotesCommand } from './node-set-remotes.ts';
import { nodeTokenCommand } from './node-token.ts';
import { serverRunCommand } from './run.ts';
import { serverTarballCommand } from './tarball.ts';

/** `mvpn-client server …`: the MetaVPN host's side. Admin commands work on the local state directory only. Loaded on demand (its `describe` is in ../commands.ts). */
export const serverGroup: Omit<CliGroup, 'describe'> = {
  command: 'server',
  children: [
    serverInitCommand,
    serverJoinMaterialCommand,
    serverRunCommand,
    serverAnchorCommand,
    {
      command: 'api',
      describe: "the HTTPS API's CA: roll it to a new one",
      children: [apiRollCaCommand],
    },
    {
      command: 'network',
      describe: 'create, list, show, update, start, stop, delete, purge networks and roll their CAs',
      children: [
        networkCreateCommand,
        networkListCommand,
        networkShowCommand,
        networkUpdateCommand,
        networkUpCommand,
        networkDownCommand,
        networkDeleteCommand,
        networkPurgeCommand,
        networkRollCaCommand,
      ],
    },
    {
      command: 'node',
      describe: 'add, remove, list, enroll and revoke nodes',
      children: [nodeAddCommand, nodeRemoveCommand, nodeListCommand, nodeTokenCommand, nodeRevokeCommand, nodeSetRemotesCommand],
    },
    linkGroup,
    serverPlanCommand,
    serverExportCommand,
    serverTarballCommand,
  ],
};
