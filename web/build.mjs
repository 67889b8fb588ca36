// Bundles the web terminal into dist/ (gitignored): dist/index.html plus
// content-hashed assets under dist/assets/. The Go package in this
// directory embeds dist/ when it exists.
import * as esbuild from 'esbuild';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(path.join(dist, 'assets'), { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: path.join(here, 'src/main.js') },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'esm',
  target: ['es2022'],
  outdir: path.join(dist, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'linked',
  logLevel: 'warning',
});

let js = '';
let css = '';
for (const [out, meta] of Object.entries(result.metafile.outputs)) {
  const name = path.relative(dist, path.join(process.cwd(), out)).split(path.sep).join('/');
  if (meta.entryPoint && name.endsWith('.js')) js = name;
  if (name.endsWith('.css')) css = name;
}
if (!js) throw new Error('esbuild produced no entry bundle');

const tmpl = await readFile(path.join(here, 'src/index.html'), 'utf8');
const html = tmpl
  .replace('<!-- CSS -->', css ? `<link rel="stylesheet" href="/${css}">` : '')
  .replace('<!-- JS -->', `<script type="module" src="/${js}"></script>`);
await writeFile(path.join(dist, 'index.html'), html);
console.log(`web: built dist/index.html, /${js}${css ? `, /${css}` : ''}`);
