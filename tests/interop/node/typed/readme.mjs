// Writes the README's TypeScript snippet (ts-miss) to typed/readme_miss.ts,
// as a reader would paste it, for `tsc --strict` to compile and
// typed.test.ts to run against errmap serve. Part of `npm run typed`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const readme = fs.readFileSync(path.resolve(here, '../../../../README.md'), 'utf8');
const at = readme.indexOf('<!-- readme-snippet: ts-miss ');
if (at < 0) throw new Error('README.md has no ts-miss snippet');
const open = readme.indexOf('```ts\n', at);
const close = readme.indexOf('```\n', open + 6);
if (open < 0 || close < 0) throw new Error('the ts-miss snippet is not a closed ```ts block');
fs.writeFileSync(path.join(here, 'readme_miss.ts'), readme.slice(open + 6, close));
