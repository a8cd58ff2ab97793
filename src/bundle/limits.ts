/**
 * Size limits for everything that crosses the trust boundary. They are far
 * above what a real bundle needs (a typical one is a few KiB) and far below
 * what could hurt a node, so a hostile or broken server cannot exhaust
 * memory, disk or CPU on the agent.
 */
export const limits = {
  /** A membership envelope as fetched. */
  envelopeBytes: 512 * 1024,
  /** The membership document inside the envelope. */
  membershipBytes: 256 * 1024,
  /** manifest.json and network.json. */
  manifestBytes: 64 * 1024,
  specBytes: 64 * 1024,
  /** JSON nesting depth for every signed document. */
  jsonDepth: 8,
  /** A bundle as fetched (compressed). */
  bundleBytes: 2 * 1024 * 1024,
  /** The tar stream after gunzip; the decompression stops here (gzip bombs). */
  tarBytes: 2 * 1024 * 1024 + 64 * 1024,
  /** One file inside a bundle. */
  fileBytes: 256 * 1024,
  /** All files of a bundle together. */
  totalFileBytes: 2 * 1024 * 1024,
  /** Entries in a bundle's tar (there are at most 8 legitimate files). */
  tarEntries: 16,
  /** Networks in one membership document. */
  networks: 64,
} as const;
