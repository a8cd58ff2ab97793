import type { NodeRecord } from '../../src/server/store/store.ts';

/** A node row with nothing enrolled: what store-level tests and the store benchmark insert. */
export const bareNode = (id: string): NodeRecord => ({
  id,
  publicKeyPem: null,
  keyAlg: null,
  identityCertPem: null,
  identitySerial: null,
  enrolledAt: null,
  docSerial: 1,
  docIssuedAt: 0,
  docExpiresAt: 0,
  createdAt: 0,
});
